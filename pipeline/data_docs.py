"""Data Docs: Great Expectations' validation pages, made to render with no network.

GX renders one HTML page per validated table (`pipeline.gx_gate` does that in its child process,
where GX is imported). Those pages load Bootstrap, jQuery, Vega and Font Awesome from CDNs and the
logo from S3, so offline they render unstyled and without charts. `publish_site` rewrites every
such address to a copy vendored in `pipeline/data_docs_assets/vendor` (fetched from the npm
registry by `python -m pipeline.data_docs vendor`; VENDORED says which package each file comes
from), and writes the site under the warehouse:

    data_docs/index.html                       every run, newest first, with its outcome
    data_docs/runs/<run_id>/index.html         one run: each table, its checks and failures
    data_docs/runs/<run_id>/<table>.html       GX's page for one table
    data_docs/static/                          GX's images and the vendored assets
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ASSETS = Path(__file__).with_name("data_docs_assets")

# CDN address in GX's templates -> (npm package@version, file in the package, vendored file)
VENDORED: dict[str, tuple[str, str, str]] = {
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega@5.33.1", "build/vega.min.js", "vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": (
        "vega-lite@5.23.0",
        "build/vega-lite.min.js",
        "vega-lite.min.js",
    ),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": (
        "vega-embed@6.29.0",
        "build/vega-embed.min.js",
        "vega-embed.min.js",
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": (
        "jquery@3.7.1",
        "dist/jquery.min.js",
        "jquery.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9",
        "dist/umd/popper.min.js",
        "popper.min.js",
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1",
        "dist/css/bootstrap.min.css",
        "bootstrap.min.css",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1",
        "dist/js/bootstrap.min.js",
        "bootstrap.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1",
        "dist/bootstrap-table.min.css",
        "bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1",
        "dist/bootstrap-table.min.js",
        "bootstrap-table.min.js",
    ),
    # GX asks for the 1.19.0 stylesheet of the extension; 1.19.1's is the same file, minified
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (  # noqa: E501
        "bootstrap-table@1.19.1",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
        "bootstrap-table-filter-control.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (  # noqa: E501
        "bootstrap-table@1.19.1",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
        "bootstrap-table-filter-control.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (  # noqa: E501
        "bootstrap-datepicker@1.9.0",
        "dist/css/bootstrap-datepicker.min.css",
        "bootstrap-datepicker.min.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (  # noqa: E501
        "bootstrap-datepicker@1.9.0",
        "dist/js/bootstrap-datepicker.min.js",
        "bootstrap-datepicker.min.js",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (  # noqa: E501
        "@forevolve/bootstrap-dark@1.1.0",
        "dist/css/bootstrap-prefers-dark.min.css",
        "bootstrap-prefers-dark.min.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free@6.6.0",
        "css/all.min.css",
        "fontawesome/css/all.min.css",
    ),
}
# Font Awesome's stylesheet loads its fonts from ../webfonts/
FONT_FILES = [
    "fa-brands-400.woff2",
    "fa-regular-400.woff2",
    "fa-solid-900.woff2",
    "fa-v4compatibility.woff2",
    "fa-v4compatibility.ttf",
]
GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"')]*?/([\w.-]+\.png)[^\"')]*")
GX_STATIC = re.compile(r"(?:\.\./)+static/")
SRI = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')
SUITE_LINK = re.compile(r'href="(?:\.\./)+expectations/[^"]*"')
HOME_LINK = re.compile(r'href="(?:\.\./)+index\.html"')
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?(https?:)?//""", re.IGNORECASE)


def offline_page(page: str, to_root: str) -> str:
    """GX's page with every CDN/S3 address replaced by the vendored copy (`to_root` leads from
    the page to data_docs/). Integrity and crossorigin attributes go: a browser refuses
    crossorigin scripts from file:// addresses."""
    for url, (_, _, vendored) in VENDORED.items():
        page = page.replace(f'"{url}"', f'"{to_root}static/vendor/{vendored}"')
    page = GX_LOGO.sub(lambda m: f"{to_root}static/images/{m.group(1)}", page)
    page = GX_STATIC.sub(f"{to_root}static/", page)
    page = SRI.sub("", page)
    page = SUITE_LINK.sub('href="#"', page)
    return HOME_LINK.sub('href="index.html"', page)


def remote_resources(page: str) -> list[str]:
    """Network addresses a page would load (src=, and href= of stylesheets/icons); links a
    reader may click (<a href>) do not count."""
    found = []
    for tag in re.finditer(r"<(script|link|img|iframe|source)\b[^>]*>", page, re.IGNORECASE):
        if REMOTE.search(tag.group(0)):
            found.append(tag.group(0))
    found += re.findall(r"url\(\s*['\"]?https?://[^)]*\)", page)
    return found


def _install_static(site: Path) -> None:
    static = site / "static"
    marker = static / ".vendored"
    if marker.exists():
        return
    import importlib.util

    gx_spec = importlib.util.find_spec("great_expectations")
    if gx_spec is not None and gx_spec.origin:
        gx_static = Path(gx_spec.origin).parent / "render" / "view" / "static"
        shutil.copytree(gx_static / "images", static / "images", dirs_exist_ok=True)
    shutil.copytree(ASSETS / "vendor", static / "vendor", dirs_exist_ok=True)
    marker.write_text("")


def publish_site(site: Path, run: dict, pages: dict[str, str]) -> Path:
    """Write one run's pages (table -> GX HTML) and refresh the site index; the run page's path.
    `run` is the validation results document (run_id, as_of, results)."""
    _install_static(site)
    folder = site / "runs" / run["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    for table, page in pages.items():
        (folder / f"{table}.html").write_text(offline_page(page, "../../"))
    (folder / "index.html").write_text(_run_page(run, set(pages)))
    summary = {"run_id": run["run_id"], "as_of": run["as_of"], **validation_summary(run["results"])}
    (folder / "summary.json").write_text(json.dumps(summary) + "\n")
    _write_index(site)
    return folder / "index.html"


def validation_summary(results: list[dict]) -> dict:
    """Tables, expectations, critical and warning failures, and the outcome of one run."""
    critical = sum(not r["success"] and r["severity"] == "critical" for r in results)
    warning = sum(not r["success"] and r["severity"] != "critical" for r in results)
    return {
        "tables": len({r["table"] for r in results}),
        "expectations": len(results),
        "critical": critical,
        "warning": warning,
        "outcome": "failed" if critical else "passed",
    }


HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    '<link rel="stylesheet" href="{to_root}static/vendor/bootstrap.min.css">'
    "<style>body{{padding:2rem}} td,th{{font-size:.9rem}} .failed{{color:#b00020}}</style>"
    "</head><body><h1>{title}</h1>"
)


def _run_page(run: dict, pages: set[str]) -> str:
    results = run["results"]
    summary = validation_summary(results)
    rows = []
    for table in dict.fromkeys(r["table"] for r in results):
        mine = [r for r in results if r["table"] == table]
        failed = [r for r in mine if not r["success"]]
        link = (
            f'<a href="{html.escape(table)}.html">{html.escape(table)}</a>'
            if table in pages
            else html.escape(table)
        )
        detail = "<br>".join(
            html.escape(
                f"{r['severity']}: {r['expectation']} {r['check']['columns']} — "
                f"{r.get('unexpected_count') or r.get('observed_value') or r.get('error')}"
                f" e.g. {r['examples']}"
            )
            for r in failed
        )
        status = "failed" if any(r["severity"] == "critical" for r in failed) else "passed"
        rows.append(
            f'<tr class="{status}"><td>{link}</td><td>{len(mine)}</td><td>{len(failed)}</td>'
            f"<td>{status}</td><td>{detail}</td></tr>"
        )
    title = f"Validation {run['run_id']} (as of {run['as_of']}): {summary['outcome']}"
    return (
        HEAD.format(title=html.escape(title), to_root="../../")
        + f"<p>{summary['tables']} tables, {summary['expectations']} expectations, "
        f"{summary['critical']} critical and {summary['warning']} warning failures. "
        '<a href="../../index.html">All runs</a></p>'
        '<table class="table table-sm"><thead><tr><th>table</th><th>expectations</th>'
        "<th>failed</th><th>outcome</th><th>failures</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>\n"
    )


def _write_index(site: Path) -> None:
    """The site index from each run's summary.json (small; the results stay where they are)."""
    rows = []
    for path in sorted((site / "runs").glob("*/summary.json"), reverse=True):
        summary = json.loads(path.read_text())
        name = html.escape(summary["run_id"])
        rows.append(
            f'<tr class="{summary["outcome"]}"><td><a href="runs/{name}/index.html">{name}</a>'
            f"</td><td>{summary['as_of']}</td>"
            f"<td>{summary['tables']}</td><td>{summary['expectations']}</td>"
            f"<td>{summary['critical']}</td><td>{summary['warning']}</td>"
            f"<td>{summary['outcome']}</td></tr>"
        )
    (site / "index.html").write_text(
        HEAD.format(title="custseg validation runs", to_root="")
        + '<table class="table table-sm"><thead><tr><th>run</th><th>as of</th><th>tables</th>'
        "<th>expectations</th><th>critical failures</th><th>warnings</th><th>outcome</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>\n"
    )


def vendor(destination: Path = ASSETS / "vendor") -> None:
    """Fetch every vendored file from the npm registry (`npm pack`, pinned versions)."""
    packages = {package: [] for package, _, _ in VENDORED.values()}
    for package, inner, vendored in VENDORED.values():
        packages[package].append((inner, vendored))
    packages["@fortawesome/fontawesome-free@6.6.0"] += [
        (f"webfonts/{name}", f"fontawesome/webfonts/{name}") for name in FONT_FILES
    ]
    with tempfile.TemporaryDirectory() as work:
        for package, files in packages.items():
            tarball = subprocess.run(
                ["npm", "pack", package, "--silent"],
                cwd=work,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
            with tarfile.open(Path(work) / tarball) as archive:
                for inner, vendored in files:
                    target = destination / vendored
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(f"package/{inner}")
                    target.write_bytes(source.read())
            print(f"vendored {package}: {len(files)} file(s)")


if __name__ == "__main__" and sys.argv[1:] == ["vendor"]:
    vendor()
