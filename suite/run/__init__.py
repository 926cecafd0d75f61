"""Running the night: what a builder gets and returns (``builders``, ``hparams``), one job (``job``: the job
contract, ``run_job``), the training loop (``train``), measurement (``measure``), the records (``records``),
a job's artifacts (``artifacts``), and many jobs (``pool``: the plan, its estimates, the worker pool, one process
per job, Slurm, the run directory). Nothing here imports a family, a task loader or ``suite.analysis``."""
