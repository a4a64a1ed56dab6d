"""What is in the sample photo bus.jpg (810x1080), boxes drawn by hand, and how tests
compare detections with it."""
from __future__ import annotations

BUS = [0, 230, 810, 740]
PEOPLE = [[50, 400, 245, 905], [670, 380, 810, 880], [220, 405, 345, 860]]


def iou(a, b) -> float:
    """Intersection over union of two xyxy boxes (0 for empty ones)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found(arr) -> list[tuple[str, list[float]]]:
    """(class_id, xyxy box) of each detection of a vision_msgs/Detection2DArray."""
    out = []
    for d in arr.detections:
        c, w, h = d.bbox.center.position, d.bbox.size_x, d.bbox.size_y
        out.append((d.results[0].hypothesis.class_id,
                    [c.x - w / 2, c.y - h / 2, c.x + w / 2, c.y + h / 2]))
    return out


def assert_bus_and_people(arr, bus: bool = True, min_iou: float = 0.6) -> None:
    boxes = found(arr)
    if bus:
        assert any(n == 'bus' and iou(b, BUS) > 0.8 for n, b in boxes), boxes
    for truth in PEOPLE:
        assert any(n == 'person' and iou(b, truth) > min_iou for n, b in boxes), (truth, boxes)
