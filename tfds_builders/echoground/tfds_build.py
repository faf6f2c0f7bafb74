r"""`tfds build` without apache_beam: TFDS 4.9.10's `tfds` entry point imports its
`convert_format` command, which needs apache_beam at import time, so the plain
`tfds build` fails here with "No module named 'apache_beam'". This runs TFDS's own
`build` command (same flags, same progress bars) and nothing else:

  cd tfds_builders/echoground
  ../../.venv/bin/python -m tfds_builders.echoground.tfds_build --data_dir /tmp/tfds --config synthetic

With apache_beam installed, `tfds build --data_dir /tmp/tfds --config synthetic` is equivalent.
"""

from absl import app
from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.scripts.cli import build as tfds_build
from tensorflow_datasets.scripts.cli import cli_utils


def main(args: tfds_build.Args) -> None:
  tfds.core.visibility.set_availables([tfds.core.visibility.DatasetType.TFDS_PUBLIC,
                                       tfds.core.visibility.DatasetType.COMMUNITY_PUBLIC])
  logging.set_verbosity(logging.INFO)
  args.execute()


if __name__ == "__main__":
  app.run(main, flags_parser=cli_utils.make_flags_parser(tfds_build.Args, "tfds build (echoground)"))
