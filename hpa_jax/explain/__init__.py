"""What the model saw: Grad-CAM and pooled features (`gradcam`, jitted), heat maps drawn over
the image (`maps`), and embeddings with their PCA map (`embeddings`)."""
