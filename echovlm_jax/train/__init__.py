"""Training: the one loop (loop.py) and what it is made of: the state (state.py), the sharded
step (step.py), the optimizer (optimizer.py, tower_lr.py, weight_decay.py), checkpoints,
start-up checks (run_config.py), the workdir's files (workdir_config.py, metrics_log.py),
standalone evaluation of a checkpoint (evaluate.py), and the tasks config.task picks from
(tasks/). This file imports nothing, so importing one module does not import the loop.
"""
