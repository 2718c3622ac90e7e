"""The shipped baselines (``docs/PROTOCOL.md`` section 9).

The toolkit finds this package through the ``atom_bench.models`` entry point (``pyproject.toml``)
and never imports it by name. Importing it imports every baseline module, and each registers its
model (``atom_bench.models.registry.register_model``) next to its factory; the order here is the
order of ``atom-bench models`` and of the evaluation scripts.
"""

from baselines import chance, prior, regismcan, released, cnn, vit, matcher, search  # noqa: F401, I001  (registration)
