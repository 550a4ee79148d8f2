-- The W3C traceparent of the span that enqueued a job (an API request, or
-- the job that led to it), so the worker's span continues that trace.
-- NULL when tracing is off or the enqueuer had no trace.
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
