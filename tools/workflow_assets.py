"""Keep the shipped workflows' template assets in step with the workflows themselves.

    python tools/workflow_assets.py          # rewrite model links and thumbnails
    python tools/workflow_assets.py --check  # exit 1 if a link or thumbnail is missing (the tests run this)

For every UI workflow in ``example_workflows/``:

- each node that loads a model file carries ``properties.models`` (name, url, directory): what
  ComfyUI's missing-models dialog reads, so a fresh install says what to download and where;
- ``<name>.jpg`` beside it is the thumbnail ComfyUI's template browser shows: the workflow's chain
  of nodes, drawn from the file (so it changes when the workflow does).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLES = REPO / "example_workflows"

# Where each model file the workflows name can be downloaded, and the models/ folder it belongs in.
MODEL_FILES = {
    "svd_xt.safetensors": ("https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/"
                           "svd_xt.safetensors", "checkpoints"),
    "ExVideo-SVD-128f-v1/model.fp16.safetensors": ("https://huggingface.co/ECNU-CILab/ExVideo-SVD-128f-v1/resolve/"
                                                    "main/model.fp16.safetensors", "longvid_extensions"),
    "sd_xl_base_1.0.safetensors": ("https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                                   "sd_xl_base_1.0.safetensors", "checkpoints"),
}
# (node type, index of a widget value that names a model file)
MODEL_WIDGETS = {"LongVidLoadModel": (0, 1), "CheckpointLoaderSimple": (0,)}
THUMBNAIL_SIZE = (512, 288)
# The video the extend workflow loads: the pack copies it into ComfyUI's input folder at start-up
# (nodes/runtime.py) so the workflow runs on a fresh install; users pick their own with the upload.
EXAMPLE_VIDEO = EXAMPLES / "input" / "longvid_example.mp4"
EXAMPLE_VIDEO_FRAMES = 8


def example_video() -> None:
    """Synthetic moving shapes (longvid_core.evaluation.synthetic), 128x72, 8 frames at 8 fps."""
    from longvid_core.evaluation.synthetic import random_scene, render
    from longvid_core.run.video_io import VideoWriter

    EXAMPLE_VIDEO.parent.mkdir(exist_ok=True)
    with VideoWriter(EXAMPLE_VIDEO, 8) as writer:
        writer.write(render(random_scene(7, 72, 128), EXAMPLE_VIDEO_FRAMES))


def model_links(node: dict) -> list[dict]:
    """The ``properties.models`` entries for a node: one per model file it names."""
    links = []
    for index in MODEL_WIDGETS.get(node["type"], ()):
        name = node["widgets_values"][index]
        if name in MODEL_FILES:
            url, directory = MODEL_FILES[name]
            links.append({"name": name, "url": url, "directory": directory})
    return links


def with_model_links(workflow: dict) -> dict:
    out = json.loads(json.dumps(workflow))
    for node in out["nodes"]:
        links = model_links(node)
        if links:
            node.setdefault("properties", {})["models"] = links
        elif "models" in node.get("properties", {}):
            del node["properties"]["models"]
    return out


def chain(workflow: dict) -> list[list[str]]:
    """Node titles in columns by depth from the sources (what feeds what), top to bottom by id."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    feeds = {n: set() for n in nodes}
    for _, src, _, dst, _, _ in workflow["links"]:
        feeds[dst].add(src)
    depth = {}

    def depth_of(node_id):
        if node_id not in depth:
            depth[node_id] = 1 + max((depth_of(s) for s in feeds[node_id]), default=-1)
        return depth[node_id]

    columns: dict[int, list[str]] = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        columns.setdefault(depth_of(node_id), []).append(node.get("title") or node["type"])
    return [columns[d] for d in sorted(columns)]


def _wrap(title: str, chars: int) -> str:
    """Two lines at most of ``chars`` characters: "LongVidSampleToVideo" -> "LongVid" / "SampleToVideo"."""
    words = title.replace("LongVid", "LongVid ").split()
    lines = [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > chars:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return "\n".join(line[:chars] for line in lines[:2])


def thumbnail(name: str, workflow: dict) -> bytes:
    from PIL import Image, ImageDraw

    width, height = THUMBNAIL_SIZE
    image = Image.new("RGB", THUMBNAIL_SIZE, (24, 26, 32))
    draw = ImageDraw.Draw(image)
    draw.text((12, 10), name.replace("_", " "), fill=(235, 235, 235))
    columns = chain(workflow)
    column_width = (width - 24) / len(columns)
    for c, titles in enumerate(columns):
        row_height = min(44, (height - 50) / len(titles))
        for r, title in enumerate(titles):
            x0 = 12 + c * column_width
            y0 = 40 + r * row_height
            ours = title.startswith("LongVid")
            draw.rectangle((x0, y0, x0 + column_width - 10, y0 + row_height - 8),
                           fill=(70, 110, 200) if ours else (70, 74, 84), outline=(200, 200, 210))
            draw.multiline_text((x0 + 4, y0 + 3), _wrap(title, int((column_width - 14) / 6)), fill=(255, 255, 255),
                                spacing=1)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report what is out of date instead of writing it")
    args = parser.parse_args(argv)
    stale = []
    if not EXAMPLE_VIDEO.is_file():
        stale.append(EXAMPLE_VIDEO.name)
        if not args.check:
            example_video()
    for path in sorted(EXAMPLES.glob("*.json")):
        workflow = json.loads(path.read_text())
        linked = with_model_links(workflow)
        if linked != workflow:
            stale.append(path.name)
            if not args.check:
                path.write_text(json.dumps(linked, indent=2) + "\n")
        picture = path.with_suffix(".jpg")
        # a thumbnail is redrawn on request; --check only asks that it is there (JPEG bytes differ
        # between Pillow versions)
        if not args.check:
            picture.write_bytes(thumbnail(path.stem, linked))
        elif not picture.is_file():
            stale.append(picture.name)
    if stale:
        print(("out of date: " if args.check else "written: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
