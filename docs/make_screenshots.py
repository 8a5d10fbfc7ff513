"""Re-make the user guide's screenshots (docs/img/*.png) from the real widgets.

    python docs/make_screenshots.py [--weights FILE.safetensors] [--out docs/img]
                    [--only radiologist annotator researcher volume clear contested steer]

Runs headless (starts Xvfb through pyvirtualdisplay when no DISPLAY is set). Uses the bundled
weights, or --weights. Without any weights it falls back to a *scripted stand-in* (fixed
disks at the prompt, in three groups of 9, 5 and 2 of 16) so the screenshots still show the
workflow; those images are stamped "illustration: scripted stand-in, not model output", and
docs/img/provenance.txt says which model (and weights file digest) made each of them; a
re-made shot updates its own line only. Re-run when the weights land.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHOTS = ("radiologist", "annotator", "researcher", "volume", "clear", "contested", "steer")
STEER_READER = 0  # the reader whose outline the steering shot's simulated annotator wants
STEER_CLICKS = 2
STAMP = "illustration: scripted stand-in, not model output"


def pick_model(weights: str | None):
    """(segmenter, description, is_stand_in)."""
    from napari_ambiseg.errors import WeightsError
    from napari_ambiseg.segmenter import Segmenter
    from napari_ambiseg.testing import ScriptedSegmenter

    try:
        seg = Segmenter.load(weights, "auto")
    except WeightsError as e:
        print(f"make_screenshots: {e}; using the scripted stand-in", file=sys.stderr)
        return ScriptedSegmenter(radii=(3, 6, 0)), "scripted stand-in (no weights)", True
    return seg, weights or "bundled LIDC model", False


def weights_digest(weights: str | None) -> str:
    """Start of the weights file's SHA-256: which weights made a shot (provenance)."""
    from napari_ambiseg.weights_io import resolve_weights

    path = resolve_weights(weights).expanduser()
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def viewer_with_ct(stamp: bool, role: str = "clear"):
    """napari with a shipped LIDC nodule (`role`; the demo's by default) and its readers."""
    import napari

    from napari_ambiseg.widgets.demo import WINDOW_SIZE, add_demo_layers

    viewer = napari.Viewer(title="AmbiSeg", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    image, _ = add_demo_layers(viewer, role)  # the nodule and its readers' outlines
    if stamp:
        text = viewer.canvas.overlays.text
        text.text, text.visible, text.color, text.font_size = STAMP, True, "yellow", 12
    return viewer, image


def sample(viewer, image, segmenter, name, slices: str = "current"):
    """The sampling and gallery docks, run once at the demo point (`slices`: the dock's
    choice, e.g. "follow" for the whole finding)."""
    from napari_ambiseg.widgets.demo import sample_demo_point

    try:
        sampler, gallery = sample_demo_point(viewer, image, segmenter, name, slices=slices)
    except RuntimeError as e:
        raise SystemExit(f"make_screenshots: {e}") from None
    viewer.reset_view()
    return sampler, gallery


def shoot(viewer, path: Path) -> None:
    from napari_ambiseg.widgets.demo import settle

    settle()
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def radiologist(out: Path, segmenter, name, stand_in) -> None:
    viewer, image = viewer_with_ct(stand_in)
    _, gallery = sample(viewer, image, segmenter, name)
    gallery.select(gallery.current()[1]["modes"][0][0])
    shoot(viewer, out / "radiologist.png")
    viewer.close()


def annotator(out: Path, segmenter, name, stand_in) -> None:
    viewer, image = viewer_with_ct(stand_in)
    _, gallery = sample(viewer, image, segmenter, name)
    labels = gallery.adopt_mode(1)
    for name in (f"{image.name} agreement", f"{image.name} samples", "prompt"):
        viewer.layers[name].visible = False
    if labels is not None:
        labels.mode = "paint"
        labels.brush_size = 2
    bounds = gallery.current()[1]["bounds"]
    viewer.scene.camera.center = tuple(image.data_to_world(((bounds[0] + bounds[2]) / 2,
                                                      (bounds[1] + bounds[3]) / 2)))
    viewer.scene.camera.zoom *= 2.5
    shoot(viewer, out / "annotator.png")
    viewer.close()


def researcher(out: Path) -> None:
    from napari_ambiseg.widgets.demo import wait_for
    from napari_ambiseg.widgets.training import TrainingWidget

    viewer, _ = viewer_with_ct(False)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "synthetic.npz")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (16, 64, 64), dtype=np.uint8)
        yy, xx = np.ogrid[:64, :64]
        masks = np.stack([[(yy - 32) ** 2 + (xx - 32) ** 2 <= (4 + r + k % 3) ** 2
                           for r in range(4)] for k in range(16)]).astype(np.uint8)
        np.savez(data, images=images, masks=masks)
        w = TrainingWidget(viewer)
        viewer.window.add_dock_widget(w, name="Train AmbiSeg model")
        w.data.setText(str(data))
        w.val_data.setText(str(data))
        w.out_dir.setText(str(Path(tmp, "run")))
        w.preset.setCurrentText("tiny (smoke tests)")
        w.iterations.setValue(60)
        w.batch_size.setValue(8)
        w.val_every.setValue(20)
        w.device.setCurrentText("cpu")
        w.extra = {"val_size": 4, "val_n": 4, "log_every": 2, "warmup": 5, "threads": 1}
        w.start()
        wait_for(w.finished, 600)
        if w.worker is not None:  # let the dock settle (buttons re-enabled)
            wait_for(w.worker.finished, 30)
        w.out_dir.setText("~/ambiseg-runs/my-first-model")
        w.data.setText("~/data/lidc/train.npz")
        w.val_data.setText("~/data/lidc/val.npz")
        viewer.reset_view()
        shoot(viewer, out / "researcher.png")
    viewer.close()


def volume(out: Path, segmenter, name, stand_in) -> None:
    """The demo nodule as a volume: the whole finding followed up and down from the readers'
    agreement slice, its 3D modes with their sizes (mm^3, long axis) in the gallery."""
    from napari_ambiseg.widgets.demo import settle

    viewer, image = viewer_with_ct(stand_in)
    sampler, gallery = sample(viewer, image, segmenter, name, slices="follow")
    # the sampling dock (Slices: whole finding) under the layer list, so that several modes'
    # sizes show in the gallery
    gallery_alone(viewer, sampler, layer_list=True)
    info = gallery.current()[1]
    for rank, size in enumerate(info["mode_sizes"], start=1):  # what the headers show
        print(f"volume: slices {info['z0']}+, mode {rank} - {size['count']} of {info['n']}: "
              f"{size['text']}; slices {size.get('slices')}")
    gallery.select(info["modes"][0][0])
    settle()  # lay the gallery out, then scroll its mode 1 to the top (readers' row above)
    first = gallery.headers[-len(info["modes"])]
    gallery.scroll.verticalScrollBar().setValue(first.parentWidget().y())
    prompt = viewer.layers["prompt"]
    viewer.scene.camera.center = tuple(prompt.data_to_world(prompt.data[-1])[-2:])
    viewer.scene.camera.zoom *= 1.6
    shoot(viewer, out / "volume.png")
    viewer.close()


def gallery_alone(viewer, sampler, layer_list: bool) -> None:
    """The gallery alone on the right, full height; the sampling dock on the left in place of
    the layer controls (under the layer list with `layer_list`, else alone)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    dock = sampler.parentWidget()
    while not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    qt_viewer = viewer.window._qt_viewer
    qt_viewer.dockLayerControls.hide()
    qt_viewer.dockLayerList.setVisible(layer_list)
    viewer.window._qt_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)


def answers(out: Path, segmenter, name, stand_in, role: str, shot: str) -> None:
    """The two answers on one nodule (`role`), as the demo shows it: the finding probability
    over the gallery, the outline modes drawn given a finding, the readers above them."""
    from napari_ambiseg.widgets.demo import focus

    viewer, image = viewer_with_ct(stand_in, role)
    sampler, gallery = sample(viewer, image, segmenter, name)
    gallery_alone(viewer, sampler, layer_list=False)
    focus(viewer, image, zoom=2.2)
    print(f"{shot}: {role} nodule, {gallery.answer.text()}; modes "
          f"{[len(m.members) for m in sampler.last_outputs.modes]}")
    shoot(viewer, out / f"{shot}.png")
    viewer.close()


def steer(out: Path, segmenter, name, stand_in) -> str:
    """Steering on the clear nodule: an annotator who wants reader STEER_READER's outline
    clicks STEER_CLICKS times where mode 1 is wrong (the click rule of
    benchmarks/steer_clicks.py, `constraints.next_click`), each click redrawing the samples.
    Returns what was clicked (provenance)."""
    from napari_ambiseg.constraints import next_click
    from napari_ambiseg.widgets import steer as S
    from napari_ambiseg.widgets.demo import demo_target, focus, readers_of, wait_for

    viewer, image = viewer_with_ct(stand_in)
    sampler, _ = sample(viewer, image, segmenter, name)
    readers = np.asarray(readers_of(viewer, image).data)
    z = demo_target(readers)[0]  # the slice the demo samples
    target = readers[STEER_READER, z] > 0
    clicked = []
    for _ in range(STEER_CLICKS):
        res = sampler.last_outputs
        shown = res.masks[res.modes[0].representative]
        shown = shown[z - res.z0] if res.z0 is not None else shown
        click = next_click(shown, target)
        if click is None:
            break
        kind, (y, x) = click
        sampler.steer.choose(S.INCLUDE if kind == "include" else S.EXCLUDE)
        layer = S.constraints_layer(viewer, image)
        world = image.data_to_world(np.array([z, y, x], float))
        layer.add(layer.world_to_data(np.asarray(world)))
        wait_for(sampler.done, 120)
        clicked.append(f"{kind} ({z}, {y}, {x})")
    gallery_alone(viewer, sampler, layer_list=False)
    focus(viewer, image, zoom=2.2)
    print(f"steer: {sampler.status.text()}")
    shoot(viewer, out / "steer.png")
    viewer.close()
    return (f"clear nodule, an annotator aiming at reader {STEER_READER + 1}: "
            + ", ".join(clicked))


PROVENANCE_END = "made by docs/make_screenshots.py"


def record_provenance(out: Path, made: dict[str, str]) -> None:
    """Update docs/img/provenance.txt: one "<file>.png: <how it was made>" line per shot,
    the lines of shots not re-made this time kept."""
    path, lines = out / "provenance.txt", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            files, sep, how = line.partition(": ")
            if sep and files.endswith(".png"):
                lines.update(dict.fromkeys(files.split(", "), how))
    lines.update(made)
    path.write_text("".join(f"{f}: {how}\n" for f, how in lines.items()) + PROVENANCE_END + "\n")


def main() -> int:
    from napari_ambiseg.widgets.demo import ensure_display

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None)
    p.add_argument("--out", default=str(HERE / "img"))
    p.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS),
                   help="re-make only these screenshots")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    display = ensure_display()
    try:
        segmenter, name, stand_in = pick_model(a.weights)
        model = f"{name} ({STAMP if stand_in else 'sha256 ' + weights_digest(a.weights)})"
        shots = {"radiologist": (radiologist, model), "annotator": (annotator, model),
                 "volume": (volume, f"{model}; whole finding followed from the readers' "
                                    "agreement slice (--only volume)"),
                 "researcher": (lambda o, *_: researcher(o), "a 60-iteration run of the tiny "
                                "preset on synthetic data"),
                 "clear": (lambda *a: answers(*a, "clear", "clear"),
                           f"{model}; the clear nodule given a finding"),
                 "contested": (lambda *a: answers(*a, "unseen", "contested"),
                               f"{model}; the nodule 2 of 4 readers outlined, given a finding"),
                 "steer": (steer, model)}
        made = {}
        for shot in a.only:
            make, how = shots[shot]
            said = make(out, segmenter, name, stand_in)
            made[f"{shot}.png"] = how + (f"; {said}" if isinstance(said, str) else "")
        record_provenance(out, made)
    finally:
        if display is not None:
            display.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
