"""The `echoground` TFDS dataset (see README.md): `Builder` and `EchogroundConfig`."""

from tfds_builders.echoground.echoground_dataset_builder import Builder, EchogroundConfig

__all__ = ["Builder", "EchogroundConfig"]
