package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotpipe/iotpipe/internal/demo"
	"github.com/iotpipe/iotpipe/internal/proc"
)

// child is one child process of the benchmark (see internal/proc: its
// own process group, SIGKILL when the benchmark's thread dies, an explicit
// environment).
type child struct {
	*proc.Proc
	name    string
	logPath string
	lines   lineCounter // lines written to stdout, when counted
	stopped atomic.Bool // stop was called: an exit is expected
}

// lineCounter counts the newlines written to it.
type lineCounter struct{ n atomic.Int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

// Load is the number of lines so far.
func (c *lineCounter) Load() int64 { return c.n.Load() }

// children owns every process the benchmark starts.
type children struct {
	dir  string
	env  []string // every child's whole environment
	mu   sync.Mutex
	all  []*child
	died chan *child // children that exited without stop
}

// newChildren starts children with exactly the environment env.
func newChildren(dir string, env []string) *children {
	return &children{dir: dir, env: env, died: make(chan *child, 64)}
}

// start runs bin with args; stdout and stderr go to <dir>/<name>.log, or
// with countLines the stdout lines are only counted.
func (cs *children) start(name, bin string, countLines bool, args ...string) (*child, error) {
	c := &child{name: name, logPath: filepath.Join(cs.dir, strings.ReplaceAll(name, " ", "-")+".log")}
	cfg := proc.Config{Name: name, Path: bin, Args: args, Env: cs.env, LogPath: c.logPath}
	if countLines {
		cfg.Stdout = &c.lines
	}
	p, err := proc.Start(cfg)
	if err != nil {
		return nil, err
	}
	c.Proc = p
	go func() {
		<-p.Done()
		if !c.stopped.Load() {
			cs.died <- c
		}
	}()
	cs.mu.Lock()
	cs.all = append(cs.all, c)
	cs.mu.Unlock()
	return c, nil
}

func (c *child) pid() int { return c.Pid() }

func (c *child) exited() bool { return c.Exited() }

func (c *child) exitCode() int { return c.ExitCode() }

// stop sends SIGTERM and waits up to wait for the exit, then kills the
// process group. It returns an error unless the child exited 0.
func (c *child) stop(wait time.Duration) error {
	c.stopped.Store(true)
	code, err := c.Stop(wait)
	if err != nil {
		return fmt.Errorf("%w (log %s)", err, c.logPath)
	}
	if code != 0 {
		return fmt.Errorf("%s exited %d after SIGTERM (log %s):\n%s", c.name, code, c.logPath, tail(c.logPath, 10))
	}
	return nil
}

// stopAll sends SIGTERM to every running child at once and waits up to
// wait for them; see killAll for what remains.
func (cs *children) stopAll(wait time.Duration) {
	cs.mu.Lock()
	all := append([]*child(nil), cs.all...)
	cs.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range all {
		if !c.exited() {
			wg.Go(func() { _ = c.stop(wait) })
		}
	}
	wg.Wait()
}

// killAll kills every child's process group that is still running.
func (cs *children) killAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.all {
		c.stopped.Store(true)
		c.Kill()
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(cannot read " + path + ")"
	}
	if len(b) > 32<<10 {
		b = b[len(b)-32<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// httpGet returns the body of a 200 answer within 2 s.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	return httpGetWithin(ctx, url, 2*time.Second)
}

// httpGetWithin returns the body of a 200 answer within timeout.
func httpGetWithin(ctx context.Context, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return b, nil
}

// scrape reads a /metrics page.
func scrape(ctx context.Context, addr string) (demo.Metrics, error) {
	b, err := httpGet(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return nil, err
	}
	return demo.Parse(bytes.NewReader(b))
}

// waitReady polls http://addr/readyz until it answers 200, the child
// exits or timeout passes.
func waitReady(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := httpGet(ctx, "http://"+addr+"/readyz"); err == nil {
			return nil
		}
		if c.exited() {
			return fmt.Errorf("%s exited %d before it was ready; log %s:\n%s", c.name, c.exitCode(), c.logPath, tail(c.logPath, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; log %s:\n%s", c.name, timeout, c.logPath, tail(c.logPath, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// simSummary is the simulator's final line ("simulate: done after …").
type simSummary struct {
	Published, Acked, Unconfirmed, Refused int64
}

func parseSimSummary(log string) (simSummary, error) {
	var line string
	for l := range strings.SplitSeq(log, "\n") {
		if strings.HasPrefix(l, "simulate: done after") {
			line = l
		}
	}
	if line == "" {
		return simSummary{}, errors.New("no 'simulate: done after' line")
	}
	get := func(key string) (int64, error) {
		i := strings.Index(line, " "+key+" ")
		if i < 0 {
			return 0, fmt.Errorf("no %q in %q", key, line)
		}
		f := strings.Fields(line[i+len(key)+2:])
		if len(f) == 0 {
			return 0, fmt.Errorf("no number after %q", key)
		}
		return strconv.ParseInt(strings.TrimRight(f[0], ","), 10, 64)
	}
	var s simSummary
	var errs []error
	for _, x := range []struct {
		key string
		v   *int64
	}{{"published", &s.Published}, {"acked", &s.Acked}, {"unconfirmed", &s.Unconfirmed}, {"refused", &s.Refused}} {
		n, err := get(x.key)
		errs = append(errs, err)
		*x.v = n
	}
	return s, errors.Join(errs...)
}
