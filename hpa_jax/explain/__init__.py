"""What the model saw: Grad-CAM and pooled features (`gradcam`, jitted), heat maps drawn over
the image (`maps`), and embeddings on disk (npz, AnnData, TSV) with their PCA or UMAP map
(`embeddings`)."""
