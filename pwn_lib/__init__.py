"""pwn_lib: the tested library behind the Parallel WaveNet course.

Modules import in one direction, bottom first, as the README's "Library layout" states and
tests/test_layering.py checks: config <- audio/data/features/artifacts <- distributions/flows/layers <-
wavenet/student <- distill/losses/phones <- trainer <- evaluate/heldout/ablation/listening <- train.
"""

from pwn_lib.config import fast_mode, pick, seed_everything

__version__ = "0.1.0"
__all__ = ["fast_mode", "pick", "seed_everything", "__version__"]
