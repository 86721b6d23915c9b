"""pwn_lib: the tested library behind the Parallel WaveNet course.

Modules import in one direction:
config <- audio/data <- distributions/flows <- wavenet/student <- distill/losses <- train.
"""

from pwn_lib.config import fast_mode, pick, seed_everything

__version__ = "0.1.0"
__all__ = ["fast_mode", "pick", "seed_everything", "__version__"]
