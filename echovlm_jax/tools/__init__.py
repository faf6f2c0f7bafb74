"""Command-line tools beside the trainer (`python -m echovlm_jax.main`), as big_vision's tools/:
`export` (a training workdir -> an artifact), `predict` (an artifact on DICOM / PNG files) and
`label_views` (a view classifier's predictions for every image of a MIMIC tree or the
synthetic data). Each is `python -m echovlm_jax.tools.NAME --help`.
"""
