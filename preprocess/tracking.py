"""People in a video: MTCNN detections linked from frame to frame by ByteTrack, numbered 1..P.

ByteTrack comes from Roboflow's `trackers` package (where supervision's ByteTrack moved); it was
chosen over norfair by benchmarks/compare_trackers.py (figures in benchmarks/RESULTS.md). Person 1
is the track with the most frames, so a single-subject video's subject is person 1 even when
other faces pass through.
"""
import collections
import copy
import math

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

# A detection must overlap the track's predicted box by this IoU to continue it.
MIN_IOU = 0.1

Person = collections.namedtuple('Person', ['number', 'frames', 'mean_box'])
Person.__doc__ = """One tracked person: number (1 = most frames), frames (1-based frame numbers with a
face of at least min_prob, ascending), mean_box (x1, y1, x2, y2 averaged over those frames)."""


class _ByteTrackNamedAtBirth(ByteTrackTracker):
    # ByteTrack confirms a new track only when the next frame continues it, so a face seen in one
    # frame, or just before a missed frame, would belong to nobody; every face counts here (a
    # spurious one becomes a short track, which ranks last).
    def _spawn_new_tracks(self, detection_boxes, confidences, unmatched_high_local, high_indices,
                          out_det_indices, out_tracker_ids):
        first_output, first_track = len(out_tracker_ids), len(self.tracks)
        super()._spawn_new_tracks(detection_boxes, confidences, unmatched_high_local, high_indices,
                                  out_det_indices, out_tracker_ids)
        born = iter(self.tracks[first_track:])
        for position in range(first_output, len(out_tracker_ids)):
            if confidences[out_det_indices[position]] >= self.track_activation_threshold:
                track = next(born)
                track.tracker_id = self._allocate_tracker_id()
                out_tracker_ids[position] = track.tracker_id


class FaceTracker:
    """Track ids for the detections of each frame, fed one frame at a time.

    `ids[t][i]` is the raw track id of face i of frame t (0-based), or -1 for a face below
    min_prob that continues no track.
    """

    def __init__(self, fps, min_prob, gap_s):
        # ByteTrack counts its lost-track buffer in frames of a 30 frames/s video.
        self._tracker = _ByteTrackNamedAtBirth(
            lost_track_buffer=int(math.ceil(gap_s * 30)), frame_rate=float(fps),
            track_activation_threshold=min_prob, high_conf_det_threshold=min_prob,
            minimum_consecutive_frames=1, minimum_iou_threshold=MIN_IOU)
        self.ids = []

    def fork(self):
        """An independent copy that has seen the same frames and records no ids yet: adaptive
        sampling tries a frame on it and keeps it only if that frame is not refined away."""
        copied = copy.copy(self)
        copied._tracker = copy.deepcopy(self._tracker)
        copied.ids = []
        return copied

    def update(self, faces):
        """Track the faces (preprocess.faces.Face) of the next frame; returns their ids."""
        boxes = np.array([face.box for face in faces], np.float32).reshape(-1, 4)
        detections = sv.Detections(xyxy=boxes, confidence=np.array([face.prob for face in faces], np.float32),
                                   data={'index': np.arange(len(faces))})
        result = self._tracker.update(detections)
        ids = [-1] * len(faces)
        for index, track in zip(result.data.get('index', ()), result.tracker_id):
            ids[int(index)] = int(track)
        self.ids.append(ids)
        return ids


class TrackedVideo:
    """Every detection of every frame with its person number, made once the whole video was seen.

    faces[t]: the Face list of frame t+1 (most confident first); person[t][i]: the person number
    of faces[t][i], 0 for none; people: Person tuples, number 1 first.
    """

    def __init__(self, faces, track_ids, min_prob, width, height):
        self.faces = faces
        self.width, self.height = width, height
        self.min_prob = min_prob
        confident = collections.defaultdict(list)
        for frame, (frame_faces, ids) in enumerate(zip(faces, track_ids), start=1):
            for face, track in zip(frame_faces, ids):
                if track >= 0 and face.prob >= min_prob:
                    confident[track].append((frame, face.box))
        order = sorted(confident, key=lambda track: (-len(confident[track]), confident[track][0][0], track))
        number_of = {track: number for number, track in enumerate(order, start=1)}
        self.person = [[number_of.get(track, 0) for track in ids] for ids in track_ids]
        self.people = [Person(number_of[track], np.array([frame for frame, _ in confident[track]]),
                              np.mean([box for _, box in confident[track]], axis=0))
                       for track in order]
        self._face_index = {}
        for frame, numbers in enumerate(self.person, start=1):
            for index, number in enumerate(numbers):
                if number and faces[frame - 1][index].prob >= min_prob:
                    self._face_index[(number, frame)] = index

    @property
    def frames(self):
        return len(self.faces)

    def face_index(self, number, frame):
        """Index in faces[frame - 1] of person `number`'s face of at least min_prob, or None."""
        return self._face_index.get((number, frame))

    def left_right(self):
        """{'left': person number or None, 'right': ...}: the two people with the most frames, sides
        by their mean horizontal position over the frames where both are visible (all their
        frames if never together), so each keeps one side for the whole video. A lone person
        goes to the side of the frame its mean position is on."""
        sides = {'left': None, 'right': None}
        if not self.people:
            return sides
        if len(self.people) == 1:
            only = self.people[0]
            centre = (only.mean_box[0] + only.mean_box[2]) / 2
            sides['left' if centre < self.width / 2 else 'right'] = only.number
            return sides
        first, second = self.people[:2]
        together = np.intersect1d(first.frames, second.frames)
        centres = []
        for person in (first, second):
            frames = together if together.size else person.frames
            boxes = [self.faces[frame - 1][self.face_index(person.number, frame)].box for frame in frames]
            centres.append(np.mean([(box[0] + box[2]) / 2 for box in boxes]))
        left, right = (first, second) if centres[0] <= centres[1] else (second, first)
        return {'left': left.number, 'right': right.number}
