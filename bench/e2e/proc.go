package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procStat is what we read from /proc/<pid>/stat.
type procStat struct {
	PPID       int
	CPUTicks   uint64 // utime + stime
	StartTicks uint64 // starttime, to detect a reused pid
}

// parseStat parses the content of /proc/<pid>/stat. The command name (field
// 2) may hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' in stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("stat has %d fields after the name, want ≥ 20", len(f))
	}
	num := func(n int) (uint64, error) { return strconv.ParseUint(f[n-3], 10, 64) }
	ppid, err := num(4)
	if err != nil {
		return procStat{}, fmt.Errorf("ppid: %w", err)
	}
	ut, err := num(14)
	if err != nil {
		return procStat{}, fmt.Errorf("utime: %w", err)
	}
	st, err := num(15)
	if err != nil {
		return procStat{}, fmt.Errorf("stime: %w", err)
	}
	start, err := num(22)
	if err != nil {
		return procStat{}, fmt.Errorf("starttime: %w", err)
	}
	return procStat{PPID: int(ppid), CPUTicks: ut + st, StartTicks: start}, nil
}

// parseKB returns the value in bytes of a "Key:   123 kB" line of
// /proc/<pid>/status or smaps_rollup; ok is false when key is absent.
func parseKB(b []byte, key string) (int64, bool) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, found := bytes.CutPrefix(line, []byte(key+":"))
		if !found {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, true
	}
	return 0, false
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// statusKB reads one field of /proc/<pid>/status (VmRSS, VmHWM).
func statusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	n, _ := parseKB(b, key)
	return n
}

// pss is the proportional set size of pid (shared pages divided among the
// processes that map them), or its VmRSS when smaps_rollup is unreadable.
func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err == nil {
		if n, ok := parseKB(b, "Pss"); ok {
			return n
		}
	}
	return statusKB(pid, "VmRSS")
}

// withChildren returns pid and every process whose parent is pid (one
// level: PostgreSQL's postmaster and its backends).
func withChildren(pid int) []int {
	out := []int{pid}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		st, err := readStat(n)
		if err == nil && st.PPID == pid {
			out = append(out, n)
		}
	}
	return out
}

// pidFile reads the first line of a pid file (PostgreSQL's postmaster.pid
// too) and checks that the process exists.
func pidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return 0, fmt.Errorf("%s: process %d is gone", path, pid)
	}
	return pid, nil
}

// servicePids finds the pids of the shared services from the pid files in
// the state directory (scripts/services.sh).
func servicePids(stateDir string) (map[string]int, error) {
	files := map[string]string{
		"mosquitto":  "mqtt/pid",
		"kafka":      "kafka/pid",
		"versitygw":  "s3/pid",
		"postgresql": "postgres/data/postmaster.pid",
	}
	// PostgreSQL's files are elsewhere when the postgres user cannot
	// enter the state directory (a clone in a private home, mktemp -d):
	// services.sh records where in postgres/base (its pg_locate).
	if b, err := os.ReadFile(filepath.Join(stateDir, "postgres", "base")); err == nil && strings.TrimSpace(string(b)) != "" {
		files["postgresql"] = filepath.Join(strings.TrimSpace(string(b)), "data", "postmaster.pid")
	}
	out := map[string]int{}
	var errs []error
	for name, f := range files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(stateDir, f)
		}
		pid, err := pidFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		out[name] = pid
	}
	return out, errors.Join(errs...)
}

// cpuTimes returns the busy and total jiffies of all CPUs from the first
// line of /proc/stat (busy = total − idle − iowait; steal counts as busy:
// the cores were not ours).
func cpuTimes(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, errors.New("no cpu line in /proc/stat")
	}
	var idle uint64
	for i, x := range f[1:] {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if i == 8 { // guest and guest_nice are already in user and nice
			break
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return total - idle, total, nil
}

func readCPUTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	busy, total, _ = cpuTimes(b)
	return busy, total
}
