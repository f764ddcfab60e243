"""transfer.py's plot: MB/s against round-trip time for each client (download and upload
of the big file), and files/s for the small files, from the results as --json saves
them, with two reference lines: the relay's ceiling (a plain TCP stream through it) and
the bound of a fixed 2 MiB SSH channel window, 2 MiB per round trip: OpenSSH's, which
HPN-SSH lifts (docs/performance.md says why this line rather than HPN-SSH's own
figures)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

WINDOW = 2 << 20  # bytes: OpenSSH's channel window, and so at most this per round trip
MARKERS = "osD^vP*Xhp"


def _style(names: list) -> dict:
    """client -> plot keywords: a colour and marker each, pyssh's lines thicker."""
    colors = plt.get_cmap("tab10").colors
    return {
        n: {
            "color": colors[i % len(colors)],
            "marker": MARKERS[i % len(MARKERS)],
            "linewidth": 2.6 if n.startswith("pyssh") else 1.3,
        }
        for i, n in enumerate(names)
    }


def _series(rows: list, name: str, work: str, op: str, key: str) -> tuple:
    pts = sorted(
        (r["rtt_ms"], r[key])
        for r in rows
        if (r["client"], r["work"], r["op"]) == (name, work, op) and r.get(key)
    )
    return [p[0] for p in pts], [p[1] for p in pts]


def _references(ax, doc: dict, op: str, rtts: list) -> None:
    pts = sorted((c["rtt_ms"], c["mb_s"]) for c in doc.get("ceiling", []) if c["op"] == op)
    if pts:
        ax.plot(*zip(*pts), "k--", marker="x", label="plain TCP through the relay (ceiling)")
    delayed = [r for r in rtts if r > 0]
    if delayed:  # a curve between the round trips measured, a dot at each
        lo, hi = min(delayed), max(delayed)
        xs = sorted(set(delayed + [lo + (hi - lo) * i / 50 for i in range(51)]))
        ys = [WINDOW / (x / 1000) / 1e6 for x in xs]
        ax.plot(xs, ys, ":", color="grey", linewidth=2, label="2 MiB window / RTT (OpenSSH)")
        ax.plot(delayed, [WINDOW / (x / 1000) / 1e6 for x in delayed], ".", color="grey")


def _big_panel(ax, doc: dict, rows: list, op: str, style: dict, rtts: list) -> None:
    for name, kw in style.items():
        xs, ys = _series(rows, name, "big", op, "mb_s")
        if xs:
            ax.plot(xs, ys, label=name, **kw)
    _references(ax, doc, op, rtts)
    size = doc["settings"]["size"] / 2**20
    ax.set_title(f"{op}: one file of {size:.0f} MiB")
    ax.set_ylabel("MB/s (10^6 B/s, log scale)")


def _small_panel(ax, doc: dict, rows: list, style: dict) -> None:
    for name, kw in style.items():
        for op, dash in (("download", "-"), ("upload", "--")):
            xs, ys = _series(rows, name, "small", op, "files_s")
            if xs:
                ax.plot(xs, ys, linestyle=dash, **kw)
    s = doc["settings"]
    where = "in a tree" if s.get("layout", "tree") == "tree" else "in one directory"
    what = f"{s['files']} files of {s['file_size'] // 1024} KiB {where}"
    ax.set_title(what if any(r["work"] == "small" for r in rows) else "small files: not run")
    ax.set_ylabel("files/s (log scale)")
    ax.legend(
        handles=[
            Line2D([], [], color="k", linestyle="-", label="download"),
            Line2D([], [], color="k", linestyle="--", label="upload"),
        ],
        loc="upper right",
        fontsize="small",
    )


def plot(doc: dict, png: str) -> None:
    """Draw doc (transfer.py's --json) into png: three panels side by side."""
    rows = [r for r in doc["results"] if not r.get("error")]
    names = list(dict.fromkeys(r["client"] for r in doc["results"]))
    rtts = sorted({r["rtt_ms"] for r in doc["results"]})
    style = _style(names)
    fig, axes = plt.subplots(1, 3, figsize=(17, 6))
    for ax, op in zip(axes[:2], ("download", "upload")):
        _big_panel(ax, doc, rows, op, style, rtts)
    _small_panel(axes[2], doc, rows, style)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("round-trip time added, ms")
        ax.set_xticks(rtts)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    failed = sorted({r["client"] for r in doc["results"] if r.get("error")})
    if failed:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append("failed (not drawn): " + ", ".join(failed))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small", frameon=False)
    s = doc["settings"]
    fig.suptitle(
        f"SSH file transfer against round-trip time: {s['cipher']} forced, connect included,"
        f" median of {s['reps']}, {doc.get('date', '')}"
    )
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(png, dpi=100)
    plt.close(fig)
