-- The move job that set `moving_to`: a move called off (superseded by a
-- newer one) removes its copy unless a newer move to the same tier has
-- begun and may be reusing it.
ALTER TABLE renditions ADD COLUMN move_job BIGINT;
