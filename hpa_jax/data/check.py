"""Command line: `python -m hpa_jax.data.check --data_dir=D [--csv=train.csv] [--subdir=train]
[--format=png] [--max_examples=5] [--sources=NAME=FORMAT:IMAGES[:CSV] ...]`.

Scans a dataset and reports every problem, grouped by kind with a count and the first
examples: the label CSV (missing, empty, malformed, duplicate Ids, Target tokens that are not
integers in 0..27, images without labels), the channel files (missing, extra: an Id that is not
in the CSV, unexpected names) and every image of the CSV (unreadable or truncated, wrong mode or
dtype, channels of different sizes). Training stops at the first of these with a one-line error;
this finds them all in one pass. Exit code 0 when clean, 1 when anything is wrong.

The checks are the readers' own (`kaggle.labels_problems`, `sources.image_problems`), so a
dataset that checks clean is one training reads.

`--sources`, repeated, checks every source of a combined training set (`data.sources`; see
`hpa_jax.data.combined`) in turn, then their union: Ids in more than one source, sizes that differ.
Reading is streamed (`parallel.ordered_map`): memory holds the labels and the problems found,
not the images, so 100k images check in the memory of a few.
"""

import collections
import dataclasses
import pathlib
import sys

from absl import app, flags

from hpa_jax import console
from hpa_jax.data import combined, kaggle, parallel, sources
from hpa_jax.data.kaggle import Problem
from hpa_jax.errors import DataError, one_line_errors

PROG = "hpa_jax.data.check"
MISSING_FOLDER = "missing image folder"
EXTRA_FILE = "extra channel file (Id not in the CSV)"
UNEXPECTED_NAME = "unexpected file name"
ID_IN_TWO_SOURCES = "Id in more than one source"

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing this module
    for its functions (tests, other CLIs) registers no absl flags."""
    flags.DEFINE_string("data_dir", None, "Dataset folder (with train.csv and train/ in the Kaggle layout).")
    flags.DEFINE_string("csv", "train.csv", "Label CSV (Id,Target), relative to --data_dir.")
    flags.DEFINE_string("subdir", "train", "Image folder, relative to --data_dir.")
    flags.DEFINE_enum("format", "png", sources.FORMATS,
                      "Channel file format: png (Kaggle), tif (full size), jpg (HPAv18).")
    flags.DEFINE_integer("max_examples", 5, "Examples printed per problem kind.")
    flags.DEFINE_integer("num_threads", 4, "Threads decoding images.")
    flags.DEFINE_multi_string("sources", [], combined.SOURCES_HELP + " Checks each, then their union; --csv, "
                                             "--subdir and --format are then unused.")
    flags.mark_flag_as_required("data_dir")


def csv_problems(path) -> list[Problem]:
    """Every problem of a label CSV (one for a file that cannot be used at all)."""
    return kaggle.labels_problems(path)[1]


def file_problems(folder, ids, fmt: str = "png", *, csv_name: str = "the CSV") -> list[Problem]:
    """Problems visible in the folder listing: channel files whose Id is not in `ids`, and files
    with the format's extension that are not named `{Id}_{color}.ext`. Missing channel files are
    found per image (`sources.image_problems`)."""
    folder = pathlib.Path(folder)
    found, unexpected, _ = sources.scan_folder(folder, fmt)
    ext = sources.EXTENSIONS[fmt]
    known = set(ids)
    problems = [Problem(UNEXPECTED_NAME, str(folder / name), f"not named {{Id}}_{{red,green,blue,yellow}}{ext}")
                for name in unexpected]
    for image_id, colors in found.items():
        if image_id not in known:
            problems += [Problem(EXTRA_FILE, str(folder / f"{image_id}_{color}{ext}"),
                                 f"Id {image_id} is not in {csv_name}") for color in colors]
    return problems


@dataclasses.dataclass
class CheckResult:
    problems: list[Problem]
    num_ids: int                                  # images checked
    num_files: int                                # files in the image folder
    shapes: collections.Counter                   # (h, w, bits) -> images
    notes: list[str] = dataclasses.field(default_factory=list)
    ids: list[str] = dataclasses.field(default_factory=list)   # the Ids checked, in order


def check_dataset(data_dir, *, csv: str = "train.csv", subdir: str = "train", fmt: str = "png",
                  num_threads: int = 4, progress: bool = True) -> CheckResult:
    """Runs every check on a dataset folder and collects the problems (CSV, listing, then images)."""
    data_dir = pathlib.Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: --data_dir is not a folder")
    return check_files(data_dir / csv, data_dir / subdir, fmt=fmt, num_threads=num_threads, progress=progress)


def check_files(csv_path, folder, *, fmt: str = "png", num_threads: int = 4, progress: bool = True) -> CheckResult:
    """`check_dataset` on a label CSV and an image folder given by their paths (one source)."""
    csv_path, folder = pathlib.Path(csv_path), pathlib.Path(folder)
    frame, problems = kaggle.labels_problems(csv_path)
    notes = []
    if not folder.is_dir():
        problems.append(Problem(MISSING_FOLDER, str(folder), "image folder not found (--subdir)"))
        return CheckResult(problems, 0, 0, collections.Counter(), notes)
    found, _, extensions = sources.scan_folder(folder, fmt)
    ext = sources.EXTENSIONS[fmt]
    others = {e: n for e, n in sorted(extensions.items())
              if e != ext and e in (".png", ".tif", ".tiff", ".jpg", ".jpeg")}
    if not found and others:
        listed = ", ".join(f"{n} {e}" for e, n in others.items())
        notes.append(f"no {{Id}}_{{color}}{ext} files in {folder} but {listed} files: wrong --format?")
    if frame is None:
        notes.append(f"the CSV cannot be used: checking the {len(found)} Ids found in {folder} instead")
        ids = list(found)
    else:
        ids = list(dict.fromkeys(frame["Id"]))  # duplicates are reported once, by the CSV check
        problems += file_problems(folder, ids, fmt, csv_name=csv_path.name)

    def inspect(image_id):
        return sources.inspect_image(folder, image_id, fmt=fmt)

    shapes = collections.Counter()
    from tqdm import tqdm

    for shape, image_problems in tqdm(parallel.ordered_map(inspect, ids, num_threads=num_threads), total=len(ids),
                                      desc="checking images", unit="img", disable=not progress, file=sys.stderr):
        problems += image_problems
        if shape is not None:
            shapes[shape] += 1
    if len({s[:2] for s in shapes}) > 1:
        notes.append("images have different sizes: set data.image_size to resize them to one size")
    return CheckResult(problems, len(ids), sum(extensions.values()), shapes, notes=notes, ids=ids)


def check_sources(union, *, num_threads: int = 4, progress: bool = True) -> list[tuple[str, CheckResult]]:
    """`check_files` on every source of a training set (`combined.Source`s), then the checks of
    their union: an Id in two sources (which training refuses), and images of different sizes
    across the sources (which need `data.image_size`). Returns (heading, result) per section."""
    sections = [(str(source), check_files(source.csv, source.images, fmt=source.fmt, num_threads=num_threads,
                                          progress=progress)) for source in union]
    sizes = {shape[:2] for _, result in sections for shape in result.shapes}
    problems = [Problem(ID_IN_TWO_SOURCES, str(union[k].csv), f"Id {image_id} is also in {union[first].csv} "
                                                               f"(source {union[first].name})")
                for image_id, first, k in combined.ids_in_two_sources([r.ids for _, r in sections])]
    notes = (["the sources' images differ in size: training on them together needs data.image_size"]
             if len(sizes) > 1 else [])
    total = sum(r.num_ids for _, r in sections)
    sections.append((f"all {len(union)} sources", CheckResult(problems, total, sum(r.num_files for _, r in sections),
                                                              collections.Counter(), notes)))
    return sections


def format_report(result: CheckResult, max_examples: int = 5) -> str:
    """The report: a summary line, notes, then each problem kind with its count and first examples."""
    sizes = ", ".join(f"{w}x{h} {bits}-bit: {n}" for (h, w, bits), n in result.shapes.most_common())
    lines = [f"checked {result.num_ids} images, {result.num_files} files" + (f" (sizes {sizes})" if sizes else "")]
    lines += [f"note: {note}" for note in result.notes]
    by_kind = collections.defaultdict(list)
    for problem in result.problems:
        by_kind[problem.kind].append(problem)
    if not by_kind:
        lines.append("no problems found")
        return "\n".join(lines)
    lines.append(f"{len(result.problems)} problem(s) of {len(by_kind)} kind(s):")
    for kind, problems in by_kind.items():
        lines.append(f"  {kind}: {len(problems)}")
        lines += [f"    {problem}" for problem in problems[:max_examples]]
        if len(problems) > max_examples:
            lines.append(f"    ... and {len(problems) - max_examples} more")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with one_line_errors(PROG):
        if FLAGS.sources:
            sections = check_sources(combined.parse_sources(FLAGS.sources, FLAGS.data_dir),
                                     num_threads=FLAGS.num_threads)
        else:
            sections = [("", check_dataset(FLAGS.data_dir, csv=FLAGS.csv, subdir=FLAGS.subdir, fmt=FLAGS.format,
                                           num_threads=FLAGS.num_threads))]
    for heading, result in sections:
        print((f"== {heading}\n" if heading else "") + format_report(result, FLAGS.max_examples), flush=True)
    sys.exit(1 if any(result.problems for _, result in sections) else 0)


def cli():
    """The `hpa-jax-check` console script."""
    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
