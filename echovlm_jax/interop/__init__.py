"""Outside CLIP / SigLIP checkpoints (Hugging Face directories, open_clip state dicts,
big_vision .npz): reading their weights and architecture, the name tables between their
layouts and our towers (both ways), their image processing and tokenizer, the trainer's
config.model_init hook and `load_pretrained`'s model for them. Imports models/ and echo/,
never the trainer or inference.
"""
