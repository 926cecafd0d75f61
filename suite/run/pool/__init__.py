"""Many jobs: the plan of a run (``plan``), its time and memory estimates (``estimates``), the worker pool and the
torchrun path (``runner``), one child process per job (``process``), Slurm (``slurm``), the run directory
(``rundir``: its lock, done keys, curves, each job's request)."""
