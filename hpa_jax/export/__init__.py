"""A trained run in the formats other tools read (`python -m hpa_jax.export`, `hpa-jax-export`).

Every format but `timm` is one function of one input, the same for all (`exported.EXPORT_CONTRACT`
words it for the files written):

- input `images`: float32 (N, 4, S, S), channels R, G, B, Y (microtubules, protein, nucleus,
  ER), the 8-bit pixel values 0-255 as the run's reader gives them, resized to the run's input
  size S by its `data.resample` rule; N is free (a dynamic batch);
- inside: the run's per-channel normalisation, the model in inference mode (BatchNorm's running
  statistics, no dropout), float32, one view (no test-time augmentation);
- outputs `logits` (N, 28) and `probabilities` (N, 28) = sigmoid(logits); a class is predicted
  where its probability exceeds the run's threshold (`thresholds.json`, written beside).

Formats: `onnx` (jax2onnx; checked in onnxruntime), `bioimageio` (a BioImage.IO model package
with the ONNX weights; checked by `bioimageio.core`), `timm` (the encoder as timm's state dict in
safetensors, the head beside it), `stablehlo` (`jax.export`'s serialisation). Their packages are
the `export` extra (`requirements-export.txt`), imported only when a format needs them.
"""
