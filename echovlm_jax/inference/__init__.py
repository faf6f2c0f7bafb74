"""What a user of an exported model needs and nothing of training or tf.data: the artifact on
disk (integrity, restore), its tokenizer, frame preparation, the `Pretrained` model and
`load_pretrained` (which also loads outside CLIP / SigLIP checkpoints through interop/).
"""
