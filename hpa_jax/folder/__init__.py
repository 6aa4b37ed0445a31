"""A user's own folder of images: finding and reading `{Id}_{color}` sets (`images`) and
predicting them with a trained run (`predict`)."""
