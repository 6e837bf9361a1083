package lake

import (
	"reflect"
	"testing"
)

func TestPlanRecovery(t *testing.T) {
	in := func(s, e int64) intent { return intent{Start: s, End: e} }
	for _, tc := range []struct {
		name      string
		intents   []intent
		committed int64
		replay    *intent
		stale     []string
		discard   int
		warn      int
	}{
		{"none", nil, 10, nil, nil, 0, 0},
		{"committed, intent not yet deleted", []intent{in(0, 10)}, 10, nil, []string{"k0"}, 0, 0},
		{"in flight", []intent{in(10, 20)}, 10, &intent{Start: 10, End: 20}, nil, 0, 0},
		{"in flight after control record", []intent{in(11, 20)}, 10, &intent{Start: 11, End: 20}, nil, 0, 0},
		{"no commit yet", []intent{in(0, 5)}, -1, &intent{Start: 0, End: 5}, nil, 0, 0},
		{"stale and in flight", []intent{in(0, 10), in(10, 20)}, 10, &intent{Start: 10, End: 20}, []string{"k0"}, 0, 0},
		{"two in flight", []intent{in(10, 20), in(20, 30)}, 10, &intent{Start: 10, End: 20}, nil, 1, 1},
		{"straddles", []intent{in(5, 15)}, 10, nil, []string{"k0"}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := make([]string, len(tc.intents))
			for i := range keys {
				keys[i] = "k" + string(rune('0'+i))
			}
			r := planRecovery(tc.intents, keys, tc.committed)
			if !reflect.DeepEqual(r.replay, tc.replay) || !reflect.DeepEqual(r.stale, tc.stale) ||
				len(r.discard) != tc.discard || len(r.warnings) != tc.warn {
				t.Errorf("got replay=%v stale=%v discard=%d warnings=%v", r.replay, r.stale, len(r.discard), r.warnings)
			}
		})
	}
}
