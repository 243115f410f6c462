-- What a subscription's leader delivered since the last reset and has not
-- seen settled, with the number of deliveries of each (two arrays of the
-- same length, by position). A new leader (failover, handover, settings
-- change) goes on from there: it counts attempts towards max_retries where
-- the old one stopped, and settles acks of deliveries the old one made. A
-- reset empties both: acks of deliveries made before it are ignored.
ALTER TABLE subscriptions
    ADD COLUMN delivered          bigint[]  NOT NULL DEFAULT '{}',
    ADD COLUMN delivered_attempts integer[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT subscriptions_delivered_pairs
        CHECK (cardinality(delivered) = cardinality(delivered_attempts));
