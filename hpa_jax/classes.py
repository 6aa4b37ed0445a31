"""The 28 HPA localisation classes and the channel order every array in the package uses."""

import re

CLASS_NAMES = (
    "Nucleoplasm", "Nuclear membrane", "Nucleoli", "Nucleoli fibrillar center",
    "Nuclear speckles", "Nuclear bodies", "Endoplasmic reticulum", "Golgi apparatus",
    "Peroxisomes", "Endosomes", "Lysosomes", "Intermediate filaments",
    "Actin filaments", "Focal adhesion sites", "Microtubules", "Microtubule ends",
    "Cytokinetic bridge", "Mitotic spindle", "Microtubule organizing center", "Centrosome",
    "Lipid droplets", "Plasma membrane", "Cell junctions", "Mitochondria",
    "Aggresome", "Cytosol", "Cytoplasmic bodies", "Rods & rings",
)
NUM_CLASSES = len(CLASS_NAMES)


def class_slug(index: int) -> str:
    """`02_Nucleoli`: a class as a file name or TensorBoard tag (which allow no spaces), in label order."""
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", CLASS_NAMES[index]).strip("_")

# R, G, B, Y = microtubules, protein of interest, nucleus, endoplasmic reticulum.
CHANNELS = ("red", "green", "blue", "yellow")

# Images per class in the official Kaggle train.csv (31,072 images); the label-frequency
# prior used by E-loss defaults and by the synthetic generator.
KAGGLE_TRAIN_COUNTS = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537,
    1066, 21, 530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328, 11,
)
