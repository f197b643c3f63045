"""``mltrain-compare``: placeholder until the comparison module lands."""


def main() -> None:
    raise SystemExit("mltrain-compare is not implemented yet")
