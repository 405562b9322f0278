"""Plot the warm rate of each loader in benchmarks/peers-results.md as a share of the memmap.

Run: .venv-peers/bin/python benchmarks/plot_peers.py   (needs matplotlib, which .venv-peers has)

Reads the tables `benchmarks/peers.py --out benchmarks/peers-results.md` wrote (warm epoch /
memmap: the median of the per-epoch ratios, and their range) and draws one panel per image
size, the memmap at 100% as a line; writes docs/peers-warm.png.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(
    r"^\| (?P<name>[^|]+) \| [^|]+ \| [^|]+ \| (?P<median>[\d.]+)% \((?P<low>\d+)%–(?P<high>\d+)%\) \|"
)


def tables(text: str) -> dict[str, list[tuple[str, float, float, float]]]:
    """{'64x64, …': [(loader, median, low, high), …]} in percent of the memmap."""
    out: dict[str, list[tuple[str, float, float, float]]] = {}
    title = None
    for line in text.splitlines():
        heading = re.match(r"^\*\*(.+)\*\*$", line.strip())
        if heading:
            title = heading.group(1)
            out[title] = []
            continue
        row = ROW.match(line)
        if title and row and not row["name"].startswith("memmap"):
            out[title].append(
                (row["name"].replace(", 2 workers", ""), float(row["median"]),
                 float(row["low"]), float(row["high"]))
            )  # fmt: skip
    return out


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = tables((ROOT / "benchmarks" / "peers-results.md").read_text())
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 3.8), sharey=False)
    for ax, (title, rows) in zip(axes, data.items(), strict=True):
        names = [r[0] for r in rows]
        medians = [r[1] for r in rows]
        top = 130  # (a range past it is drawn to the edge: a stalled reference epoch)
        errors = [[r[1] - r[2] for r in rows], [min(r[3], top) - r[1] for r in rows]]
        colours = ["tab:blue" if n.startswith("lakeio") else "tab:grey" for n in names]
        ax.barh(names, medians, xerr=errors, color=colours, capsize=3)
        ax.axvline(100, color="black", linestyle="--", linewidth=1, label="memmap (raw .npy)")
        ax.set_xlim(0, top)
        for y, median in enumerate(medians):
            ax.text(median / 2, y, f"{median:.0f}%", va="center", ha="center", color="white")
        ax.set_xlabel("warm epoch, % of the memmap's rate beside it (median, range)")
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "peers-warm.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
