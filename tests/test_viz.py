"""Tests for flare_helpers.viz: orientation and aspect of slice figures, video frames,
the viewer, training curves and meshes.

Colours are recognised by hue: overlays blend an organ colour with grey and the
3D shading scales it, and both keep the hue of ``labels.ORGAN_COLORS``.
"""

from __future__ import annotations

import base64
import io
import re

import imageio_ffmpeg
import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv, to_rgb
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage

from flare_helpers.data.examples import REAL_CT_DIR
from flare_helpers.data.labels import FLARE22_IDS, ORGAN_COLORS
from flare_helpers.data.nifti import load_image, load_label
from flare_helpers.errors import FlareError
from flare_helpers.phantoms.synthetic import make_phantom
from flare_helpers.viz import (
    CaseArrays,
    interactive_3d,
    organ_meshes,
    plot_case,
    plot_training_curves,
    render_rotation_video,
    save_figure,
    slice_viewer,
    video_html,
)
from flare_helpers.viz import video as video_module
from flare_helpers.viz.mesh import coarsening_factors
from flare_helpers.viz.planes import PLANE_AXIS, PLANES, organ_centre, organ_slices

SHAPE = (64, 64, 32)


@pytest.fixture(scope="module")
def phantom():
    """(image float32 HU, FLARE22 labels, spacing mm) of a 64×64×32 phantom in RAS order."""
    image, labels, affine = make_phantom(3, 1, SHAPE, family="simple")
    return image.astype(np.float32), labels, tuple(float(s) for s in np.diag(affine)[:3])


@pytest.fixture(scope="module")
def eroded(phantom):
    """A prediction: every organ of the phantom eroded by one voxel."""
    labels = phantom[1]
    pred = np.zeros_like(labels)
    for flare_id in np.unique(labels[labels > 0]):
        pred[ndimage.binary_erosion(labels == flare_id)] = flare_id
    return pred


def organ_pixels(rgb: np.ndarray, organ: str, tolerance: float = 0.035) -> np.ndarray:
    """Boolean mask of pixels whose hue is that of ``organ`` (saturated, not dark)."""
    hsv = rgb_to_hsv(np.asarray(rgb[..., :3], dtype=np.float32) / 255.0)
    target = rgb_to_hsv(np.asarray(ORGAN_COLORS[organ]))[0]
    distance = np.abs(hsv[..., 0] - target)
    distance = np.minimum(distance, 1.0 - distance)
    return (distance < tolerance) & (hsv[..., 1] > 0.2) & (hsv[..., 2] > 0.15)


def panel(png: np.ndarray, fig: Figure, label: str) -> np.ndarray:
    """The pixels of the axes labelled ``label`` (e.g. ``"axial:gt"``) in a saved PNG."""
    (ax,) = [a for a in fig.axes if a.get_label() == label]
    box = ax.get_window_extent()
    height = png.shape[0]
    rows = slice(int(round(height - box.y1)) + 1, int(round(height - box.y0)) - 1)
    return png[rows, int(round(box.x0)) + 1 : int(round(box.x1)) - 1]


def centroid(mask: np.ndarray) -> np.ndarray:
    """(row, column) centre of a non-empty mask."""
    assert mask.sum() > 5
    return np.argwhere(mask).mean(axis=0)


def best_slice(labels: np.ndarray, axis: int, organs: tuple[str, str]) -> int:
    """The slice along ``axis`` where both organs have the most voxels (the smaller count)."""
    other = tuple(a for a in range(3) if a != axis)
    counts = [(labels == FLARE22_IDS[o]).sum(axis=other) for o in organs]
    return int(np.argmax(np.minimum(*counts)))


def save_png(fig: Figure, path) -> np.ndarray:
    save_figure(fig, path)
    return np.asarray(Image.open(path).convert("RGB"))


# --------------------------------------------------------------------------- slice figures


def test_png_size_and_axial_left_right(phantom, eroded, tmp_path):
    image, labels, spacing = phantom
    k = best_slice(labels, 2, ("liver", "spleen"))
    position = (SHAPE[0] // 2, SHAPE[1] // 2, k)
    fig = plot_case(image, spacing, labels, eroded, slices=position, dice={"liver": 0.9512})
    png = save_png(fig, tmp_path / "case.png")

    width, height = np.round(fig.get_size_inches() * fig.dpi).astype(int)
    assert png.shape == (height, width, 3)
    assert len(fig.axes) == 9
    assert "liver 0.951" in fig.get_suptitle()
    axial = panel(png, fig, "axial:gt")
    half = axial.shape[1] // 2
    liver, spleen = organ_pixels(axial, "liver"), organ_pixels(axial, "spleen")
    # Radiological convention: the patient's right (liver) on the image's left.
    assert liver[:, :half].sum() > 0.95 * liver.sum() > 50
    assert spleen[:, half:].sum() > 0.95 * spleen.sum() > 10
    assert organ_pixels(panel(png, fig, "axial:image"), "liver").sum() == 0


def test_anterior_up_superior_up(phantom, tmp_path):
    image, labels, spacing = phantom
    pair = ("liver", "right_kidney")
    position = tuple(best_slice(labels, axis, pair) for axis in range(3))
    fig = plot_case(image, spacing, labels, slices=position)
    png = save_png(fig, tmp_path / "orient.png")

    # Axial: the liver lies in front of the right kidney → higher on the image.
    axial = panel(png, fig, "axial:gt")
    assert centroid(organ_pixels(axial, "liver"))[0] < centroid(organ_pixels(axial, *pair[1:]))[0]
    # Coronal: the liver is above the kidney (superior up), both right → image left.
    coronal = panel(png, fig, "coronal:gt")
    liver, kidney = (
        centroid(organ_pixels(coronal, "liver")),
        centroid(organ_pixels(coronal, pair[1])),
    )
    assert liver[0] < kidney[0]
    assert liver[1] < coronal.shape[1] / 2 and kidney[1] < coronal.shape[1] / 2
    # Sagittal: anterior (liver) on the image's left, superior up.
    sagittal = panel(png, fig, "sagittal:gt")
    liver, kidney = (centroid(organ_pixels(sagittal, o)) for o in pair)
    assert liver[1] < kidney[1] and liver[0] < kidney[0]


def test_coronal_panel_has_physical_aspect(phantom, tmp_path):
    image, labels, _ = phantom
    spacing = (0.8, 0.8, 4.0)
    fig = plot_case(image, spacing, labels)
    save_figure(fig, tmp_path / "aspect.png")
    (ax,) = [a for a in fig.axes if a.get_label() == "coronal:gt"]
    box = ax.get_window_extent()
    expected = (SHAPE[2] * spacing[2]) / (SHAPE[0] * spacing[0])  # superior–inferior / left–right
    assert box.height / box.width == pytest.approx(expected, rel=0.03)
    (ax,) = [a for a in fig.axes if a.get_label() == "axial:gt"]
    box = ax.get_window_extent()
    assert box.height / box.width == pytest.approx(1.0, rel=0.03)
    (ax,) = [a for a in fig.axes if a.get_label() == "sagittal:gt"]
    box = ax.get_window_extent()
    expected = (SHAPE[2] * spacing[2]) / (SHAPE[1] * spacing[1])  # superior–inferior / A–P
    assert box.height / box.width == pytest.approx(expected, rel=0.03)


REAL_CT = REAL_CT_DIR / "FLARE22Train"
FOUR_ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")


def _organs_in(labels2d: np.ndarray) -> set[str]:
    return {o for o in FOUR_ORGANS if (labels2d == FLARE22_IDS[o]).any()}


def test_default_slices_show_the_most_organs_on_the_real_ct():
    """Each plane is cut where it shows as many of the four organs as any of its slices can.

    On the real CT (122×101×30, RAS) the old default (all planes through the organs'
    centre) showed 4 organs axially, 2 coronally and 1 sagittally; no sagittal slice
    holds more than 3 (the kidneys lie on either side of the spine).
    """
    image = load_image(REAL_CT / "images" / "FLARE22_Tr_9002_0000.nii.gz")
    gt = load_label(REAL_CT / "labels" / "FLARE22_Tr_9002.nii.gz", image.geometry).data
    fig = plot_case(image.data, image.spacing, gt)
    best = {}
    for plane in PLANES:
        axis = PLANE_AXIS[plane]
        possible = max(len(_organs_in(np.take(gt, i, axis=axis))) for i in range(gt.shape[axis]))
        (ax,) = [a for a in fig.axes if a.get_label() == f"{plane}:image"]
        index = int(ax.get_ylabel().split()[1].split("/")[0]) - 1
        shown = _organs_in(np.take(gt, index, axis=axis))
        best[plane] = (len(shown), possible)
    assert best == {"axial": (4, 4), "coronal": (4, 4), "sagittal": (3, 3)}
    centre = organ_centre(gt, FOUR_ORGANS, gt.shape)
    assert [
        len(_organs_in(np.take(gt, centre[PLANE_AXIS[p]], axis=PLANE_AXIS[p]))) for p in PLANES
    ] == [4, 2, 1]


def test_slice_ties_go_to_the_larger_organ_area():
    labels = np.zeros((8, 6, 5), dtype=np.uint8)
    labels[1, 1:3, 1] = FLARE22_IDS["liver"]  # slice i=1: liver and spleen, 3 voxels
    labels[1, 4, 1] = FLARE22_IDS["spleen"]
    labels[5, 0:4, 0:3] = FLARE22_IDS["liver"]  # slice i=5: liver and spleen, 14 voxels
    labels[5, 5, 4:] = FLARE22_IDS["spleen"]
    labels[6, :, :] = FLARE22_IDS["liver"]  # slice i=6: the most area, one organ only
    i, j, k = organ_slices(labels, FOUR_ORGANS, labels.shape)
    assert i == 5
    assert organ_slices(None, FOUR_ORGANS, labels.shape) == (4, 3, 2)
    assert organ_slices(np.zeros_like(labels), FOUR_ORGANS, labels.shape) == (4, 3, 2)


def test_plot_case_rejects_mismatched_labels(phantom):
    image, labels, spacing = phantom
    with pytest.raises(FlareError, match="gt shape"):
        plot_case(image, spacing, labels[:, :, :10])


# --------------------------------------------------------------------------- video


def read_mp4(path) -> tuple[tuple[int, int], list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    return (width, height), frames


def test_rotation_video_mp4(phantom, eroded, tmp_path):
    _, labels, spacing = phantom
    out = render_rotation_video(
        labels,
        eroded,
        spacing,
        tmp_path / "turn.mp4",
        seconds=1.0,
        fps=6,
        size=(320, 160),
        progress=False,
    )
    assert out == tmp_path / "turn.mp4"
    size, frames = read_mp4(out)
    assert size == (320, 160)
    assert len(frames) == 6
    for a, b in zip(frames, frames[1:], strict=False):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0  # the camera moves
    for organ in ("liver", "right_kidney", "left_kidney", "spleen"):
        for half in (slice(0, 160), slice(160, 320)):  # ground truth and prediction panels
            assert max(organ_pixels(f[:140, half], organ, 0.05).sum() for f in frames) > 20
    # First frame looks at the patient's front: right (liver) on the viewer's left,
    # spleen on the right, superior (liver) above the kidneys.
    front = frames[0][:140, :160]
    liver = centroid(organ_pixels(front, "liver", 0.05))
    assert liver[1] < centroid(organ_pixels(front, "spleen", 0.05))[1]
    assert liver[0] < centroid(organ_pixels(front, "left_kidney", 0.05))[0]


def test_rotation_video_keeps_physical_proportions(tmp_path):
    """A ball on a grid of 1 × 1.5 × 3 mm voxels looks round, seen level from any side."""
    spacing = np.array([1.0, 1.5, 3.0])
    shape = (60, 40, 20)
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    centre = (np.asarray(shape) - 1) / 2.0 * spacing
    ball = (np.linalg.norm(grid - centre, axis=-1) <= 20.0).astype(np.uint8) * FLARE22_IDS["spleen"]
    out = render_rotation_video(
        ball,
        None,
        spacing,
        tmp_path / "ball.mp4",
        organs=("spleen",),
        seconds=1.0,
        fps=4,
        size=(200, 200),
        elevation=0.0,
        progress=False,
    )
    _, frames = read_mp4(out)
    for frame in frames:
        rows, cols = np.nonzero(organ_pixels(frame[:176], "spleen", 0.05))
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert width == pytest.approx(height, rel=0.1)


def test_rotation_video_gif(phantom, tmp_path):
    _, labels, spacing = phantom
    out = render_rotation_video(
        labels,
        None,
        spacing,
        tmp_path / "turn.gif",
        seconds=1.0,
        fps=6,
        size=(120, 100),
        progress=False,
    )
    with Image.open(out) as gif:
        assert gif.n_frames == 6
        assert gif.size == (120, 100)


def test_mp4_failure_falls_back_to_gif(phantom, tmp_path, monkeypatch):
    _, labels, spacing = phantom

    def broken(*args, **kwargs):
        raise OSError("no ffmpeg here")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    with pytest.warns(UserWarning, match="MP4 writing failed"):
        out = render_rotation_video(
            None,
            labels,
            spacing,
            tmp_path / "turn.mp4",
            seconds=0.5,
            fps=4,
            size=(64, 48),
            progress=False,
        )
    assert out == tmp_path / "turn.gif"
    assert not (tmp_path / "turn.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["turn.gif"]  # no temporary files left
    with Image.open(out) as gif:
        assert gif.n_frames == 2


def test_video_html_embeds_the_file(tmp_path):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 120, 240)]
    gif = video_module.write_video(lambda: frames, tmp_path / "a.gif", fps=3, size=(16, 16))
    html = video_html(gif).data
    assert html.startswith("<img")
    payload = re.search(r"base64,([^\"]+)", html).group(1)
    assert base64.b64decode(payload) == gif.read_bytes()
    mp4 = video_module.write_video(lambda: frames, tmp_path / "a.mp4", fps=3, size=(16, 16))
    html = video_html(mp4).data
    # The data URI sits in <video src>: JupyterLab's sanitizer drops <source src>.
    assert html.startswith('<video src="data:video/mp4;base64,') and "<source" not in html
    with pytest.raises(FlareError, match="not found"):
        video_html(tmp_path / "missing.mp4")


def test_render_needs_some_labels(phantom, tmp_path):
    _, _, spacing = phantom
    with pytest.raises(FlareError, match="nothing to render"):
        render_rotation_video(None, None, spacing, tmp_path / "x.mp4")
    with pytest.raises(FlareError, match="none of the organs"):
        render_rotation_video(np.zeros(SHAPE, np.uint8), None, spacing, tmp_path / "x.mp4")


# --------------------------------------------------------------------------- viewer


@pytest.fixture
def loader(phantom, eroded):
    image, labels, spacing = phantom
    cases = {
        "a": CaseArrays(image, spacing, labels, eroded),
        "b": (image[:, :, :20], spacing, None, eroded[:, :, :20]),
    }
    return cases.__getitem__


def test_viewer_static(loader):
    viewer = slice_viewer(loader, ["a", "b"], static=True)
    assert viewer.widget is None
    assert isinstance(viewer.figure, Figure)
    assert len(viewer.figure.axes) == 9  # 3 planes × (CT, ground truth, prediction)


def test_viewer_headless_env(loader, monkeypatch):
    monkeypatch.setenv("FLARE_HEADLESS", "1")
    viewer = slice_viewer(loader, ["b"])
    assert viewer.widget is None
    assert len(viewer.figure.axes) == 6  # no ground truth for case b


def test_viewer_widgets_update(loader, phantom):
    viewer = slice_viewer(loader, ["a", "b"], static=False, box_px=256)
    controls = viewer.controls
    assert viewer.widget is not None and viewer.figure is None
    # Slice numbers are 1-based on the slider and in the caption alike.
    assert controls["slice"].min == 1 and controls["slice"].max == SHAPE[2]
    assert controls["slice"].value == viewer.index + 1
    assert f"axial slice {viewer.index + 1}/{SHAPE[2]}" in viewer.caption()
    first = viewer.image.value
    controls["slice"].value = controls["slice"].value - 4
    assert viewer.image.value != first
    shown = viewer.image.value
    viewer.index += 2
    viewer.update()  # reads the controls back: the slider wins
    assert viewer.image.value == shown
    assert f"slice {controls['slice'].value}/" in viewer.label.value

    controls["plane"].value = "coronal"
    assert controls["slice"].max == SHAPE[1]
    picture = np.asarray(Image.open(io.BytesIO(viewer.image.value)))
    _, _, spacing = phantom
    expected = SHAPE[2] * spacing[2] / (SHAPE[0] * spacing[0])
    assert picture.shape[0] / picture.shape[1] == pytest.approx(expected, rel=0.02)
    # The widget has the picture's fixed pixel size, so the page cannot stretch it.
    assert max(picture.shape[:2]) == 256
    assert viewer.image.layout.width == f"{picture.shape[1]}px"
    assert viewer.image.layout.height == f"{picture.shape[0]}px"

    controls["case"].value = "b"
    assert controls["source"].options == ("prediction", "none")
    assert controls["slice"].max == SHAPE[1]
    controls["plane"].value = "axial"
    assert controls["slice"].max == 20


def test_viewer_draws_edge_letters(loader):
    viewer = slice_viewer(loader, ["a"], static=False, box_px=200, hu_window=(5000, 6000))
    viewer.source = "none"
    picture = viewer.render()  # black CT: only the letters are white
    height, width = picture.shape[:2]
    white = (picture == 255).all(axis=-1)
    third_h, third_w = height // 3, width // 3
    edges = {
        "left R": white[third_h : 2 * third_h, :30],
        "right L": white[third_h : 2 * third_h, -30:],
        "top A": white[:30, third_w : 2 * third_w],
        "bottom P": white[-30:, third_w : 2 * third_w],
    }
    for edge, region in edges.items():
        assert region.sum() > 10, edge
    assert white[30:-30, 30:-30].sum() == 0


def test_viewer_display_data_has_a_fallback(loader):
    viewer = slice_viewer(loader, ["a"], static=False, box_px=128)
    bundle = viewer.display_data()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view == {"version_major": 2, "version_minor": 0, "model_id": viewer.widget.model_id}
    assert "data:image/png;base64," in bundle["text/html"]
    assert "jupyterlab_widgets" in bundle["text/html"]
    assert not bundle["text/plain"].startswith("VBox(")


@pytest.mark.parametrize("box_px", [32, 641])
def test_viewer_box_is_checked(loader, box_px):
    with pytest.raises(FlareError, match="box_px must be 64..640"):
        slice_viewer(loader, ["a"], static=False, box_px=box_px)


# --------------------------------------------------------------------------- curves


def test_training_curves_plot_the_csv(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text(
        "epoch,loss,val_loss,dice_liver,val_dice_liver,dice_spleen,mean_dice,val_mean_dice,"
        "learning_rate\n"
        "0,1.2,1.3,0.2,0.1,0.05,0.12,0.1,0.001\n"
        "1,0.8,0.9,0.5,0.45,0.3,0.40,,0.001\n"
        "2,0.5,0.6,0.7,0.66,0.6,0.65,0.6,0.0005\n"
    )
    fig = plot_training_curves(csv)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.lines}
    assert set(lines) == {
        "loss",
        "val_loss",
        "dice_liver",
        "val_dice_liver",
        "dice_spleen",
        "mean_dice",
        "val_mean_dice",
    }
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), [1.3, 0.9, 0.6])
    np.testing.assert_allclose(lines["dice_liver"].get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(lines["dice_spleen"].get_ydata(), [0.05, 0.3, 0.6])
    np.testing.assert_allclose(lines["val_mean_dice"].get_xdata(), [0, 2])  # empty cell skipped
    np.testing.assert_allclose(lines["val_mean_dice"].get_ydata(), [0.1, 0.6])
    assert to_rgb(lines["val_dice_liver"].get_color()) == pytest.approx(ORGAN_COLORS["liver"])
    assert lines["dice_liver"].get_linestyle() == "--"
    assert lines["val_dice_liver"].get_linestyle() == "-"


def test_training_curves_errors(tmp_path):
    with pytest.raises(FlareError, match="not found"):
        plot_training_curves(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(FlareError, match="empty"):
        plot_training_curves(empty)
    header = tmp_path / "header.csv"
    header.write_text("epoch,loss,val_loss\n")
    with pytest.raises(FlareError, match="no epochs"):
        plot_training_curves(header)


# --------------------------------------------------------------------------- meshes


def test_meshes_lie_in_the_volume(phantom):
    _, labels, spacing = phantom
    meshes = organ_meshes(labels, spacing)
    assert list(meshes) == ["liver", "right_kidney", "left_kidney", "spleen"]
    low = -0.5 * np.asarray(spacing)
    high = (np.asarray(SHAPE) - 0.5) * np.asarray(spacing)
    for mesh in meshes.values():
        assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape[1] == 3
        assert np.all(mesh.vertices >= low - 1e-3) and np.all(mesh.vertices <= high + 1e-3)
        assert mesh.faces.max() < len(mesh.vertices)
    liver = meshes["liver"].vertices.mean(axis=0)
    spleen = meshes["spleen"].vertices.mean(axis=0)
    assert liver[0] > spleen[0]  # liver toward the patient's right (+R, mm)


@pytest.mark.parametrize("max_voxels", [1_000_000, 5_000])
def test_sphere_mesh_radius_in_mm(max_voxels):
    spacing = np.array([1.0, 1.5, 3.0])
    shape = (60, 40, 20)
    centre = (np.asarray(shape) - 1) / 2.0 * spacing
    grid = np.stack(
        np.meshgrid(
            *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
        ),
        axis=-1,
    )
    radius = 20.0
    labels = (np.linalg.norm(grid - centre, axis=-1) <= radius).astype(np.uint8) * 3  # spleen
    meshes = organ_meshes(labels, spacing, organs=("spleen",), max_voxels=max_voxels)
    distance = np.linalg.norm(meshes["spleen"].vertices - centre, axis=1)
    tolerance = 0.04 if max_voxels > labels.size else 0.08
    assert distance.mean() == pytest.approx(radius, rel=tolerance)
    assert distance.std() < 0.08 * radius


def test_coarsening_merges_in_plane_first():
    factors = coarsening_factors((512, 512, 110), (0.87, 0.87, 3.9))
    assert factors[0] == factors[1] > 1 and factors[2] == 1
    assert np.prod(-(-np.array([512, 512, 110]) // factors)) <= 1_000_000
    assert coarsening_factors((64, 64, 32), (0.8, 0.8, 3.0)) == (1, 1, 1)


def test_interactive_3d_has_one_mesh_per_organ(phantom):
    _, labels, spacing = phantom
    scene = interactive_3d(labels, spacing, organs=("liver", "spleen"))
    fig = scene.figure
    assert [t.type for t in fig.data] == ["mesh3d", "mesh3d"]
    assert [t.name for t in fig.data] == ["liver", "spleen"]
    r, g, b = (round(255 * c) for c in ORGAN_COLORS["spleen"])
    assert fig.data[1].color == f"rgb({r},{g},{b})"
    # Surfaces facing the light are drawn in the legend colour (ambient + diffuse = 1).
    lighting = fig.data[0].lighting
    assert lighting.ambient + lighting.diffuse == pytest.approx(1.1, abs=0.1)


def test_interactive_3d_frames_the_whole_scene(phantom):
    _, labels, spacing = phantom
    scene = interactive_3d(labels, spacing)
    layout = scene.figure.layout.scene
    points = np.concatenate([np.stack([t.x, t.y, t.z], axis=1) for t in scene.figure.data])
    ranges = np.array([layout.xaxis.range, layout.yaxis.range, layout.zaxis.range])
    assert np.all(points.min(axis=0) > ranges[:, 0]) and np.all(points.max(axis=0) < ranges[:, 1])
    extent = ranges[:, 1] - ranges[:, 0]
    aspect = np.array([layout.aspectratio.x, layout.aspectratio.y, layout.aspectratio.z])
    np.testing.assert_allclose(aspect, extent / extent.max(), rtol=1e-6)
    eye = np.array([layout.camera.eye.x, layout.camera.eye.y, layout.camera.eye.z])
    assert np.linalg.norm(eye) == pytest.approx(2.2) and eye[1] > 0  # in front, outside the box
    bundle = scene._repr_mimebundle_()
    assert bundle["application/vnd.plotly.v1+json"]["config"]["scrollZoom"] is False
    assert "scrollZoom" in bundle["text/html"] and "pip install" not in bundle["text/plain"]


def test_mesh_faces_wind_outward(phantom):
    _, labels, spacing = phantom
    for mesh in organ_meshes(labels, spacing).values():
        v, f = mesh.vertices, mesh.faces
        face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        agree = (face_normals * mesh.normals[f].sum(axis=1)).sum(axis=1) > 0
        assert agree.mean() > 0.99, mesh.organ
