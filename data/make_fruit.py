"""Writes fruit.csv and fruit_new.csv beside this file: the README's "your own CSV"
example (configs/fruit.yaml). Made-up measurements of three fruits, on different scales
(grams, centimetres, degrees Brix, pH), with the fruit's name as a text label; apples
and oranges overlap, so the classes are not trivially separable.

    python data/make_fruit.py      # rewrites both files, byte for byte the same

Python's own `random` (Mersenne Twister, `gauss`) draws the values: its sequence for a
seed is stable across Python versions, so the files can be made again anywhere.
"""

from __future__ import annotations

import pathlib
import random

HERE = pathlib.Path(__file__).resolve().parent
COLUMNS = ("weight_g", "diameter_cm", "sugar_brix", "acidity_ph")
# fruit: (mean, std) of each column, in COLUMNS order
FRUITS = {
    "apple": ((165.0, 30.0), (7.4, 0.6), (12.5, 1.6), (3.45, 0.22)),
    "lemon": ((105.0, 20.0), (5.9, 0.5), (4.0, 1.5), (2.35, 0.18)),
    "orange": ((190.0, 35.0), (7.9, 0.7), (10.5, 1.6), (3.70, 0.25)),
}
ROWS_PER_FRUIT = 80
DECIMALS = (1, 2, 1, 2)


def _row(rng: random.Random, fruit: str) -> list[str]:
    return [f"{max(rng.gauss(mean, std), 0.1):.{d}f}"
            for (mean, std), d in zip(FRUITS[fruit], DECIMALS)]


def main() -> None:
    rng = random.Random(18)
    labels = [fruit for fruit in FRUITS for _ in range(ROWS_PER_FRUIT)]
    rng.shuffle(labels)   # the file is in no particular order, as real data
    lines = [",".join((*COLUMNS, "label"))]
    lines += [",".join((*_row(rng, fruit), fruit)) for fruit in labels]
    (HERE / "fruit.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    new = ["apple", "lemon", "orange", "apple", "orange", "lemon"]   # unlabelled rows
    lines = [",".join(COLUMNS)] + [",".join(_row(rng, fruit)) for fruit in new]
    (HERE / "fruit_new.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
