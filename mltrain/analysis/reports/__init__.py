"""Reports: the numbers of the baseline comparison (:mod:`.summary`), the headline sentences
(:mod:`.headline`) and the tables and CSVs of ``mltrain-compare`` (:mod:`.tables`,
:mod:`.report`, :mod:`.envelope_report`). Import judging, never figures."""
