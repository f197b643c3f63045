"""A trained model leaves mltrain: ``mltrain-export`` writes a run's fine model (or one level)
as a Hugging Face ``transformers`` directory, ``mltrain-sample`` continues a prompt with it,
and the cross-check measures its validation loss by transformers against the run's.

Modules: what is read from a run (:mod:`.source`), the mapping onto GPT-2 (:mod:`.hf`) and the
remote code of a path with h != 1 (:mod:`.modeling_mltrain_ode`), the tokenizer
(:mod:`.tokenizer`), the cross-check (:mod:`.check`), sampling (:mod:`.sample`), the two
commands (:mod:`.cli`). Nothing in mltrain imports this package (docs/architecture.md).
"""
