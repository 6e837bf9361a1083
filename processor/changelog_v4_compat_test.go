package processor

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// restoreDump restores a changelog dump into a fresh engine at wall 28 s
// and returns the records it emits for v3After; versions counts the
// window records' format versions.
func restoreDump(t *testing.T, path string) (got, want []string, versions map[byte]int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dump changelogDump
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	eng, _ := NewEngine(goldenWindow)
	versions = map[byte]int{}
	for _, kv := range dump.Changelog {
		k, _ := base64.StdEncoding.DecodeString(kv.K)
		var v []byte
		if kv.V != "" {
			v, _ = base64.StdEncoding.DecodeString(kv.V)
			if kind, _, _, _, _ := parseKey(k); kind == keyWindow {
				versions[v[0]]++
			}
		}
		if err := eng.Restore(k, v); err != nil {
			t.Fatalf("restore %q: %v", k, err)
		}
	}
	if err := eng.FinishRestore(goldenBase.Add(28 * time.Second)); err != nil {
		t.Fatal(err)
	}
	runV2Steps(eng, v3After, func(em *Emission) {
		if em.Metric != nil {
			got = append(got, string(schemas.AppendMetric(nil, em.Metric)))
		} else {
			got = append(got, string(schemas.AppendActivity(nil, em.Activity)))
		}
	})
	return got, dump.After, versions
}

// TestRestoreChangelogV3: a changelog of version 2 and 3 window records
// (testdata/changelog_v3/v3.json, written by the version before the
// compact state, commit 285deed) restores into this version, and the same
// continuation (v3After: a late reading, updates of restored windows, a
// re-send of a restored out-of-order identity, a device without seq)
// gives the same records as that version gave, byte for byte: counts,
// sums, quantiles, first/last, revisions, ignored fields.
func TestRestoreChangelogV3(t *testing.T) {
	got, want, versions := restoreDump(t, "testdata/changelog_v3/v3.json")
	if versions[stateVersion] == 0 || versions[stateVersion3Ignored] == 0 {
		t.Fatalf("golden holds window records of versions %v, want 2 and 3", versions)
	}
	if !slices.Equal(got, want) {
		t.Errorf("after restoring versions 2 and 3:\ngot  %q\nwant %q", got, want)
	}
}

// TestChangelogV4Golden: this version writes, for v3Before, exactly the
// version 4 records of testdata/changelog_v4/v4.json (regenerate with
// IOTPIPE_WRITE_CHANGELOG_V4=1 only for a deliberate format change, which
// needs a new version number), they restore, and the continuation gives
// the same records as the version 2/3 writer gave (changelog_v3).
func TestChangelogV4Golden(t *testing.T) {
	dump := v3Dump(t)
	b, err := json.MarshalIndent(dump, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if os.Getenv("IOTPIPE_WRITE_CHANGELOG_V4") != "" {
		if err := os.WriteFile("testdata/changelog_v4/v4.json", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.ReadFile("testdata/changelog_v4/v4.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(old) != string(b) {
		t.Errorf("this version's changelog for v3Before differs from testdata/changelog_v4/v4.json:\n%s", b)
	}
	got, want, versions := restoreDump(t, "testdata/changelog_v4/v4.json")
	if len(versions) != 1 || versions[stateVersion4] == 0 {
		t.Fatalf("golden holds window records of versions %v, want only 4", versions)
	}
	_, v3want, _ := restoreDump(t, "testdata/changelog_v3/v3.json")
	if !slices.Equal(got, want) || !slices.Equal(got, v3want) {
		t.Errorf("after restoring version 4:\ngot  %q\nwant %q", got, v3want)
	}
}
