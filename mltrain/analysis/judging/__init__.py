"""Judging: reading runs (:mod:`.runs`, :mod:`.grouping`, :mod:`.seeds`, :mod:`.sizes`,
:mod:`.valsets`), validation curves and bounded values (:mod:`.curves`), the judge protocol and
the ratios the reports print (:mod:`.judge`), the tuned frontier per architecture
(:mod:`.budgets`, :mod:`.frontier`), the envelope over sizes (:mod:`.envelope`) and the
parametric fit beside it (:mod:`.scaling_fit`). Imports neither reports nor figures."""
