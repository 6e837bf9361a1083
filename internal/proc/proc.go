// Package proc runs one child process of iotpipe for tests and benchmarks:
// it starts a binary with an explicit environment, keeps its log, waits
// for a log line with a deadline, stops it with SIGTERM within a bound
// (reporting the exit code) and kills it with SIGKILL.
//
// Contract:
//   - The child's environment is exactly Config.Env: nothing of the
//     caller's environment is passed unless the caller puts it there
//     (see BaseEnv), so a test never leaks its own IOTPIPE_* settings.
//   - The child runs in its own process group and gets SIGKILL when the
//     thread that started it dies (Linux Pdeathsig); Kill and a failed
//     Stop kill the whole group, so nothing it started stays behind.
//   - Every line of stderr (and of stdout, unless Config.Stdout takes it)
//     is kept in memory (the last MaxLines) and, with Config.LogPath, in
//     a file; reading the log never blocks the child.
//
// testenv.Proc wraps this for tests (failures fail the test, the log's
// tail is printed when the test failed); bench/e2e uses it directly.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxLines is how many log lines a Proc keeps in memory (older ones stay
// in Config.LogPath when set).
const MaxLines = 20_000

// ErrExited is returned by WaitLine when the process ended before the
// line appeared.
var ErrExited = errors.New("process exited")

// ErrTimeout is returned when a wait (WaitLine, Stop) passes its bound.
var ErrTimeout = errors.New("timed out")

// Config says what to start.
type Config struct {
	// Name identifies the process in errors and logs ("bridge", "sink lake").
	Name string
	// Path of the binary and its arguments (without argv[0]).
	Path string
	Args []string
	// Env is the child's whole environment ("KEY=value"). Nil or empty
	// means an empty environment.
	Env []string
	// LogPath, when set, receives every output line as well (created or
	// truncated).
	LogPath string
	// Stdout, when set, receives the child's stdout instead of the log
	// (for a child whose stdout is data, not log lines).
	Stdout io.Writer
	// Echo, when set, receives every log line prefixed with "[Name] ",
	// as it arrives (live logs while debugging a test).
	Echo io.Writer
}

// BaseEnv returns the variables of the caller's environment a child
// needs to run at all (PATH, HOME, TMPDIR, USER, LANG, TZ), and nothing
// else.
func BaseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "USER", "LANG", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Proc is one running (or ended) child process.
type Proc struct {
	cfg  Config
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read

	mu      sync.Mutex
	cond    *sync.Cond // signalled on every new line and at exit
	lines   []string   // the last MaxLines lines
	first   int        // absolute index of lines[0]
	next    int        // absolute index of the next line WaitLine examines
	exitErr error
	code    int
}

// Start starts the process described by cfg.
func Start(cfg Config) (*Proc, error) {
	if cfg.Name == "" {
		cfg.Name = cfg.Path
	}
	cmd := exec.Command(cfg.Path, cfg.Args...)
	cmd.Env = cfg.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // exec.Cmd reads nil as "inherit"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{cfg: cfg, cmd: cmd, done: make(chan struct{}), code: -1}
	p.cond = sync.NewCond(&p.mu)

	var logFile *os.File
	if cfg.LogPath != "" {
		f, err := os.Create(cfg.LogPath)
		if err != nil {
			return nil, fmt.Errorf("start %s: log file: %w", cfg.Name, err)
		}
		logFile = f
	}
	// One pipe for stderr and stdout: the lines keep the order in which
	// the child wrote them.
	pr, pw, err := os.Pipe()
	if err != nil {
		closeQuiet(logFile)
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	cmd.Stderr, cmd.Stdout = pw, pw
	if cfg.Stdout != nil {
		cmd.Stdout = cfg.Stdout
	}
	err = cmd.Start()
	closeQuiet(pw) // the child holds its own copy
	if err != nil {
		closeQuiet(pr)
		closeQuiet(logFile)
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	var read sync.WaitGroup
	read.Go(func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if logFile != nil {
				_, _ = fmt.Fprintln(logFile, line)
			}
			if cfg.Echo != nil {
				_, _ = fmt.Fprintf(cfg.Echo, "[%s] %s\n", cfg.Name, line)
			}
			p.add(line)
		}
		// A line too long for the scanner: drain the rest so the child
		// never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	})
	readDone := make(chan struct{})
	go func() { read.Wait(); close(readDone) }()
	go func() {
		err := cmd.Wait()
		select {
		case <-readDone:
		case <-time.After(2 * time.Second):
			// Something the child started still holds the pipe: it
			// goes with the group.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			closeQuiet(pr)
			<-readDone
		}
		closeQuiet(pr)
		closeQuiet(logFile)
		p.mu.Lock()
		p.exitErr = err
		p.code = cmd.ProcessState.ExitCode()
		close(p.done) // under mu: a WaitLine between its check and cond.Wait cannot miss it
		p.mu.Unlock()
		p.cond.Broadcast()
	}()
	return p, nil
}

func closeQuiet(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

func (p *Proc) add(line string) {
	p.mu.Lock()
	p.lines = append(p.lines, line)
	if len(p.lines) > MaxLines {
		drop := len(p.lines) - MaxLines
		p.lines = append(p.lines[:0:0], p.lines[drop:]...)
		p.first += drop
	}
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Name is Config.Name.
func (p *Proc) Name() string { return p.cfg.Name }

// Pid is the process id (also its process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// LogPath is Config.LogPath.
func (p *Proc) LogPath() string { return p.cfg.LogPath }

// Done is closed once the process has exited and all its output is read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit code, or -1 while the process runs or when a
// signal ended it.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// Err is what exec.Cmd.Wait returned (nil for exit code 0); nil while
// the process runs.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// WaitLine waits until a log line containing s appears and returns it.
// Successive calls look only at lines after the previous match, so a
// test can wait for "started", then for the next "committed". It returns
// an error wrapping ErrTimeout after timeout, ErrExited when the process
// ended without printing the line, or ctx's error.
func (p *Proc) WaitLine(ctx context.Context, s string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cond.Broadcast()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.next < p.first {
			p.next = p.first
		}
		for ; p.next < p.first+len(p.lines); p.next++ {
			if l := p.lines[p.next-p.first]; strings.Contains(l, s) {
				p.next++
				return l, nil
			}
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("%s: %w (%v) before logging %q", p.cfg.Name, ErrExited, p.exitErr, s)
		default:
		}
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return "", fmt.Errorf("%s: no log line %q within %s: %w", p.cfg.Name, s, timeout, ErrTimeout)
			}
			return "", err
		}
		p.cond.Wait()
	}
}

// Count returns how many of the kept log lines contain s.
func (p *Proc) Count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// Log returns the kept log lines, joined by newlines.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Tail returns the last n kept log lines, joined by newlines.
func (p *Proc) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s to %s: %w", sig, p.cfg.Name, err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to within for the exit. It returns the
// exit code and nil when the process exited by itself (whatever the
// code); when it did not exit in time, it kills the process group and
// returns an error wrapping ErrTimeout. Stop of an ended process returns
// its exit code at once.
func (p *Proc) Stop(within time.Duration) (int, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-p.done:
		// The group too: nothing the child started may stay behind.
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return p.ExitCode(), nil
	case <-t.C:
		p.Kill()
		return -1, fmt.Errorf("%s did not exit within %s of SIGTERM and was killed: %w", p.cfg.Name, within, ErrTimeout)
	}
}

// Kill sends SIGKILL to the process group and waits for the exit.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	}
	<-p.done
}

// Describe is "<name> (pid N)" and, when the log is a file, its path.
func (p *Proc) Describe() string {
	s := fmt.Sprintf("%s (pid %d)", p.cfg.Name, p.Pid())
	if p.cfg.LogPath != "" {
		s += ", log " + p.cfg.LogPath
	}
	return s
}
