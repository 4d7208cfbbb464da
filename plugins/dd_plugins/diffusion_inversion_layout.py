"""The files of a Diffusion Inversion adapter folder, shared by the plugin and its trainer (so
they import this, not each other)."""

EMBEDDINGS = "embeddings.safetensors"
INFO = "embeddings.json"
GROUPS = "groups"
CHECKPOINTS = "checkpoints"
