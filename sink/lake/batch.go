package lake

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/iotpipe/iotpipe/schemas"
)

// fileKey identifies one open file of a batch: a dataset and the event hour
// (Unix seconds of the hour's start, UTC) its rows fall in.
type fileKey struct {
	ds   Dataset
	hour int64
}

// batch is a contiguous range of offsets [start, next) of one partition,
// turned into one Parquet file per (dataset, event hour). All its files are
// named after start, so its object keys are a function of the partition's
// records alone.
type batch struct {
	topic     string
	partition int32
	epoch     int32 // leader epoch of the last record, for the commit
	start     int64 // first offset of the range (key of every file)
	next      int64 // offset after the last record: what is committed
	opened    time.Time
	// replayEnd, when > 0, is the end of a range cut by a previous run that
	// may have left objects behind: the batch ends exactly there.
	replayEnd  int64
	replayKeys []string // object keys of that earlier cut
	files      map[fileKey]*File
	order      []fileKey
	opts       FileOptions
	records    int
	rows       int
	dlq        []*schemas.DeadLetter
}

func newBatch(topic string, partition int32, start int64, now time.Time, opts FileOptions) *batch {
	return &batch{topic: topic, partition: partition, start: start, next: start, opened: now,
		files: map[fileKey]*File{}, opts: opts}
}

func hourOf(t time.Time) int64 {
	s := t.Unix()
	return s - ((s%3600)+3600)%3600
}

func (b *batch) file(ds Dataset, t time.Time) (*File, error) {
	k := fileKey{ds, hourOf(t)}
	if f := b.files[k]; f != nil {
		return f, nil
	}
	f, err := NewFile(ds, b.opts)
	if err != nil {
		return nil, err
	}
	b.files[k] = f
	b.order = append(b.order, k)
	return f, nil
}

// size is the memory the batch holds (see File.Size).
func (b *batch) size() int {
	n := 0
	for _, f := range b.files {
		n += f.Size()
	}
	return n
}

// sealedObject is one finished Parquet file and where it goes.
type sealedObject struct {
	key     string
	dataset Dataset
	data    []byte
	rows    int
}

// seal closes every file of the batch and returns the objects, in a fixed
// order (by key).
func (b *batch) seal(prefix string) ([]sealedObject, error) {
	objs := make([]sealedObject, 0, len(b.files))
	for _, k := range b.order {
		f := b.files[k]
		rows := f.Rows()
		data, err := f.Close()
		if err != nil {
			b.abortFrom(k)
			return nil, err
		}
		objs = append(objs, sealedObject{key: objectKey(prefix, k.ds, k.hour, b.topic, b.partition, b.start),
			dataset: k.ds, data: data, rows: rows})
	}
	b.files = nil
	sort.Slice(objs, func(i, j int) bool { return objs[i].key < objs[j].key })
	return objs, nil
}

func (b *batch) abortFrom(failed fileKey) {
	for _, k := range b.order {
		if k != failed {
			if f := b.files[k]; f != nil {
				f.Abort()
			}
		}
	}
	b.files = nil
}

// abort drops the batch's files.
func (b *batch) abort() {
	for _, f := range b.files {
		f.Abort()
	}
	b.files = nil
}

// objectKey is the Hive-style key of a batch's file:
// <prefix><dataset>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<start>.parquet.
func objectKey(prefix string, ds Dataset, hour int64, topic string, partition int32, start int64) string {
	t := time.Unix(hour, 0).UTC()
	return fmt.Sprintf("%s%s/date=%s/hour=%02d/%s+%d+%d.parquet", prefix, ds, t.Format("2006-01-02"), t.Hour(),
		topic, partition, start)
}

// intentPrefix is where the intents of one partition live.
func intentPrefix(prefix, topic string, partition int32) string {
	return prefix + "_intents/" + topic + "/" + strconv.Itoa(int(partition)) + "/"
}

func intentKey(prefix, topic string, partition int32, start int64) string {
	return intentPrefix(prefix, topic, partition) + fmt.Sprintf("%020d.json", start)
}
