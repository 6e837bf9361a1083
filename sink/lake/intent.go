package lake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// intent is written before the objects of a batch: it records the offset
// range the batch covers and the keys of its objects, so that a later run
// can cut exactly the same range again (and overwrite the same keys with
// the same rows) or recognise the intent as committed and delete it.
type intent struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Start     int64    `json:"start"` // first offset of the range
	End       int64    `json:"end"`   // offset after the last record; committed on success
	Keys      []string `json:"keys"`
}

// recovery is what partition assignment decided from the intents found.
type recovery struct {
	replay   *intent  // batch to cut again exactly, nil if none
	stale    []string // intent keys of committed batches: delete
	discard  []intent // intents that can never be replayed: delete their objects and them
	warnings []string
}

// planRecovery classifies the intents of one partition given its committed
// offset (-1 when the group has none). A batch is committed exactly when
// committed >= End, because offsets are committed only at batch ends. Of the
// others, the one with the lowest start is the batch that was in flight when
// the previous owner stopped; the sink uploads one batch per partition at a
// time, so there is at most one, and any other is reported and discarded.
func planRecovery(intents []intent, keys []string, committed int64) recovery {
	var r recovery
	for i := range intents {
		in := &intents[i]
		switch {
		case in.End <= committed:
			r.stale = append(r.stale, keys[i])
		case in.Start < committed:
			// Committed inside a batch: offsets were moved by hand. The rows
			// before committed are in the lake already; keep the objects.
			r.warnings = append(r.warnings, fmt.Sprintf("intent %s [%d,%d) straddles committed offset %d; offsets were reset by hand?", keys[i], in.Start, in.End, committed))
			r.stale = append(r.stale, keys[i])
		case r.replay == nil:
			r.replay = in
		default:
			r.warnings = append(r.warnings, fmt.Sprintf("second uncommitted intent %s [%d,%d) after [%d,%d): discarding its objects", keys[i], in.Start, in.End, r.replay.Start, r.replay.End))
			r.discard = append(r.discard, *in)
		}
	}
	return r
}

// loadIntents lists and reads the intents of one partition, sorted by start.
func loadIntents(ctx context.Context, st objectStore, prefix, topic string, partition int32, log *slog.Logger) ([]intent, []string, error) {
	keys, err := st.List(ctx, intentPrefix(prefix, topic, partition))
	if err != nil {
		return nil, nil, err
	}
	var ins []intent
	var ks []string
	for _, k := range keys {
		if !strings.HasSuffix(k, ".json") {
			continue
		}
		b, err := st.Get(ctx, k)
		if errors.Is(err, errNotFound) { // deleted since the listing
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		var in intent
		if err := json.Unmarshal(b, &in); err != nil || in.Topic != topic || in.Partition != partition || in.End <= in.Start {
			// Intents are written whole by one PUT, so this is not ours.
			log.Warn("ignoring unreadable intent", "key", k, "err", err)
			continue
		}
		ins = append(ins, in)
		ks = append(ks, k)
	}
	return ins, ks, nil // List is in lexical order = start order (zero-padded)
}
