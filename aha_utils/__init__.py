"""aha_utils: the library under the "Getting to Aha" notebooks.

Data flows one way, in the order of the notebooks: task data (`aha_utils.data`) -> prompts ->
model (`config`, `model`, `weights`, `tokenizer`, `sharding`) -> sampler -> rewards -> GRPO
(`grpo`, `train_step`, `grpo_step`) -> the loop (`train`, `sft`). docs/ARCHITECTURE.md maps it.
Modules are imported by their full names (`from aha_utils.weights import load_model`); this
package imports nothing eagerly so that the pure-Python data and reward code loads without JAX.
"""

__version__ = "0.1.0"
