-- Low-latency live: where origins reach the parts of a stream's newest
-- segments (the relay of the replica that cuts them), while a publisher
-- holds the stream.
ALTER TABLE live_streams ADD COLUMN publisher_relay text;
