"""The real pretrained EfficientNet-Lite0 on real photos: maps point at the object."""

import torch

from metacam.cams import member_cams
from metacam.images import load_image

# The cat's face in skimage's chelsea() (451 x 300 px), measured once by looking at the
# photo on a 25 px grid: from left of the left eye to right of the right eye, brow to chin.
CAT_FACE_BOX = (100, 400, 50, 300)  # x0, x1, y0, y1 in original pixels
CHELSEA_SIZE = (451, 300)  # width, height


def test_gradcam_top_10_percent_lies_on_the_cats_face(lite0):
    image = load_image("sample:chelsea")
    assert image.size == CHELSEA_SIZE
    x = lite0.preprocess([image.image])
    assert int(lite0.net(x).argmax()) in range(281, 286)  # a cat class
    cam = member_cams(lite0.net, x, lite0.target_layer, methods=["gradcam"])["gradcam"][0]
    top = cam >= torch.quantile(cam.flatten(), 0.9)

    height, width = cam.shape  # the whole photo, resized without crop
    x0, x1, y0, y1 = CAT_FACE_BOX
    sx, sy = width / CHELSEA_SIZE[0], height / CHELSEA_SIZE[1]
    box = torch.zeros_like(top)
    box[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = True
    box_share = box.float().mean().item()
    inside = (top & box).sum().item() / top.sum().item()
    assert box_share < 0.6  # pixels at random would land inside about this often
    assert inside >= 0.9
