-- Progressive publish: the output version whose first segments are stored
-- and playable (growing HLS playlists) while the asset is still
-- processing. Set once per version when its first segment of every
-- rendition is stored; cleared when a version is published (from then on
-- published_version is what plays).
ALTER TABLE assets ADD COLUMN playable_version INT;
