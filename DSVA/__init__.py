"""DSVA (ISPRS J. 2023): CLIP-annotated class attributes and an attribute-attention ViT for zero-shot remote
sensing scene classification."""
