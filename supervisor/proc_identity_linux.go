package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// startTimeAbsolute: Linux start times count clock ticks since boot, so a
// process of another boot can carry a recorded start time; the boot id
// tells them apart.
const startTimeAbsolute = false

// maxEnviron caps what is read of one process's environment or command
// line (the kernel caps both near ARG_MAX anyway).
const maxEnviron = 1 << 20

// BootID returns the kernel's random id of the current boot
// (/proc/sys/kernel/random/boot_id).
func BootID() (string, error) {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(data))
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("read boot id: unexpected %q", id)
	}
	return id, nil
}

// ProcessExe returns the path of the executable pid runs
// (/proc/<pid>/exe). A file deleted or replaced since the process started
// is reported with the kernel's " (deleted)" suffix, which sameExe ignores.
func ProcessExe(pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errESRCH) {
			return "", fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return "", fmt.Errorf("executable of pid %d: %w", pid, err)
	}
	return exe, nil
}

// ProcessArgs returns the command line of pid (argv, /proc/<pid>/cmdline).
func ProcessArgs(pid int) ([]string, error) {
	data, err := readProcFile(pid, "cmdline")
	if err != nil {
		return nil, err
	}
	return splitNul(data), nil
}

// FindMarked lists the live processes of the current user whose
// environment holds key=value exactly (read from /proc/<pid>/environ, the
// environment the process was started with). Processes that vanish or
// cannot be read during the scan are skipped.
func FindMarked(key, value string) ([]Marked, error) {
	if key == "" || strings.ContainsAny(key, "=\x00") {
		return nil, fmt.Errorf("find marked processes: invalid key %q", key)
	}
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	boot, err := BootID()
	if err != nil {
		return nil, err
	}
	want := []byte(key + "=" + value)
	uid := uint32(os.Getuid())
	self := os.Getpid()
	var found []Marked
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+name, &st) != nil || st.Uid != uid {
			continue
		}
		env, err := readProcFile(pid, "environ")
		if err != nil || !hasEntry(env, want) {
			continue
		}
		m, err := markedProcess(pid, boot, env)
		if err != nil {
			continue // exited meanwhile, or a zombie
		}
		found = append(found, m)
	}
	return found, nil
}

func markedProcess(pid int, boot string, env []byte) (Marked, error) {
	start, err := ProcessStartTime(pid)
	if err != nil {
		return Marked{}, err
	}
	exe, err := ProcessExe(pid)
	if err != nil {
		return Marked{}, err
	}
	args, err := ProcessArgs(pid)
	if err != nil {
		return Marked{}, err
	}
	// Re-check: the pid must still be the process whose environment was read.
	if again, err := ProcessStartTime(pid); err != nil || again != start {
		return Marked{}, fmt.Errorf("pid %d: %w", pid, ErrIdentityMismatch)
	}
	m := Marked{
		Identity: Identity{PID: pid, StartTime: start, BootID: boot, Exe: exe},
		Args:     args,
		Env:      map[string]string{},
	}
	for _, kv := range splitNul(env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m.Env[k] = v
		}
	}
	return m, nil
}

func readProcFile(pid int, name string) ([]byte, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("read %s of pid %d: %w", name, pid, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEnviron))
	if err != nil {
		if errors.Is(err, errESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("read %s of pid %d: %w", name, pid, err)
	}
	return data, nil
}

// hasEntry reports whether the NUL-separated list data holds entry exactly.
func hasEntry(data, entry []byte) bool {
	for len(data) > 0 {
		var item []byte
		if i := bytes.IndexByte(data, 0); i >= 0 {
			item, data = data[:i], data[i+1:]
		} else {
			item, data = data, nil
		}
		if bytes.Equal(item, entry) {
			return true
		}
	}
	return false
}

func splitNul(data []byte) []string {
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil
	}
	return strings.Split(string(data), "\x00")
}
