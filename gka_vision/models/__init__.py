# Each import registers one model family with timm.
