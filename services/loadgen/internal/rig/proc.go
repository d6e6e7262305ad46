package rig

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haru-analytics/haru/pkg/proctest"
)

// Proc is one haru (or nats-server) process the rig started, with its listeners.
type Proc struct {
	*proctest.Proc
	// HTTPAddr and OpsAddr are the process's public and ops listeners ("127.0.0.1:port"),
	// empty when it has none.
	HTTPAddr string
	OpsAddr  string
}

func startProc(name, logPath, bin string, args []string, env map[string]string) (*Proc, error) {
	p, err := proctest.Launch(name, logPath, bin, args, env)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &Proc{Proc: p}, nil
}

// Stop sends SIGTERM and waits up to grace for the process to end, then kills it.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	if p.Wait(grace) != nil && !p.Exited() {
		p.Kill()
	}
}

// waitReady polls url until it answers 200, the process exits or timeout passes.
func (p *Proc) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited before ready\n%s", p.Name, p.Tail(3000))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready at %s within %s\n%s", p.Name, url, timeout, p.Tail(3000))
}

// Metrics reads the process's ops /metrics.
func (p *Proc) Metrics(ctx context.Context) (Metrics, error) {
	if p.OpsAddr == "" {
		return nil, fmt.Errorf("%s has no ops listener", p.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.OpsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s metrics: %w", p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read %s metrics: status %d", p.Name, resp.StatusCode)
	}
	return ParseMetrics(resp.Body)
}

// Memory is a process's resident memory from /proc/<pid>/status, in KiB.
type Memory struct {
	RSS  int64 // VmRSS: now
	Peak int64 // VmHWM: the high-water mark since the process started
}

// Memory reads the process's current and peak resident memory.
func (p *Proc) Memory() (Memory, error) { return ReadMemory(p.Pid()) }

// ReadMemory reads VmRSS and VmHWM of pid.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	defer f.Close()
	return parseStatus(f)
}

// parseStatus reads VmRSS and VmHWM ("VmHWM:\t  12345 kB") from a /proc status file.
func parseStatus(r io.Reader) (Memory, error) {
	var m Memory
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return Memory{}, fmt.Errorf("parse %s: %q", key, val)
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("parse %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = n
		} else {
			m.Peak = n
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if m.Peak == 0 {
		return Memory{}, fmt.Errorf("no VmHWM in status")
	}
	return m, nil
}

// EphemeralPorts is how many local ports this machine hands out to outgoing
// connections (net.ipv4.ip_local_port_range), which bounds how many streams one client
// address can hold open to one server port.
func EphemeralPorts() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, fmt.Errorf("read port range: %w", err)
	}
	return parsePortRange(string(b))
}

func parsePortRange(s string) (int, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, fmt.Errorf("port range %q: want two numbers", s)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, fmt.Errorf("port range %q: want two ascending numbers", s)
	}
	return hi - lo + 1, nil
}

// CPUTime is the user plus system CPU time process pid has used, from /proc/pid/stat.
func CPUTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	_, d, err := parseStat(string(raw))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return d, nil
}

// CPUTimeOf sums the CPU time of every live process whose command name is comm (such as
// "postgres": the server and its backends). A process that exits between two readings
// takes its time with it, so it suits long-lived processes.
func CPUTimeOf(comm string) (time.Duration, error) {
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		name, d, err := parseStat(string(raw))
		if err == nil && name == comm {
			sum += d
		}
	}
	return sum, nil
}

// parseStat reads the command name and utime + stime from a /proc/pid/stat line.
func parseStat(s string) (comm string, cpu time.Duration, err error) {
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return "", 0, fmt.Errorf("parse stat: %q", s)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(s[closing+1:])
	if len(fields) < 13 {
		return "", 0, fmt.Errorf("parse stat: %q", s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, fmt.Errorf("parse stat: %q", s)
	}
	const ticks = 100 // USER_HZ on Linux
	return s[open+1 : closing], time.Duration(utime+stime) * time.Second / ticks, nil
}
