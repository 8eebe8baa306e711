package fleet

import (
	"encoding/json"
	"testing"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/store"
)

// FuzzManifest reads a manifest and blobs as a server reads them from
// etcd: whatever another writer (or a person with etcdctl) left there
// must be refused with an error, never a panic, and a configuration it
// accepts encodes back to the same manifest.
func FuzzManifest(f *testing.F) {
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		f.Fatal(err)
	}
	var c store.Config
	if err := w.ApplyTo(&c, false); err != nil {
		f.Fatal(err)
	}
	enc, err := encode(c)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := json.Marshal(enc.man)
	f.Add(raw, enc.blobs[enc.man.Edges[0]])                                                    // the demo world's manifest and its edges
	f.Add(raw, []byte(`[{"id":"x"}]`))                                                         // a record in the wrong shard, or fields missing
	f.Add([]byte(`{"version":1,"targets":["a","b","c"]}`), []byte(`[{"block":"10.0.0.0/8"}]`)) // three target shards
	f.Add([]byte(`{"version":2}`), []byte(`[]`))                                               // a newer layout
	f.Add([]byte(`{"version":1,"zone":"z"}`), []byte(`null`))                                  // a zone of null
	f.Fuzz(func(t *testing.T, manifestRaw, blob []byte) {
		man, err := decodeManifest(manifestRaw)
		if err != nil {
			return
		}
		got, err := assemble(&man, &manifest{}, store.Config{}, func(string) ([]byte, error) { return blob, nil })
		if err != nil {
			return
		}
		again, err := encode(got)
		if err != nil {
			t.Fatalf("an accepted configuration does not encode: %v", err)
		}
		// Every record accepted is in the shard its key hashes to, so the
		// configuration's own blobs hold exactly it.
		back, err := assemble(&again.man, &manifest{}, store.Config{}, func(h string) ([]byte, error) { return again.blobs[h], nil })
		if err != nil || !edgetest.EqualJSON(back, got) {
			t.Fatalf("re-encoded configuration reads back as %+v (%v), not %+v", back, err, got)
		}
	})
}
