package supervisor

import (
	"fmt"
	"strconv"
	"syscall"
	"unsafe"
)

// startTimeAbsolute: Windows creation times are wall-clock (100 ns since
// 1601), so a process of another boot does not carry a recorded start time.
const startTimeAbsolute = true

var procQueryFullProcessImageNameW = kernel32.NewProc("QueryFullProcessImageNameW")

// BootID returns the boot counter Windows keeps in the registry
// (PrefetchParameters\BootId), or ErrUnsupported when it is not there.
func BootID() (string, error) {
	key, err := syscall.UTF16PtrFromString(`SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management\PrefetchParameters`)
	if err != nil {
		return "", err
	}
	var h syscall.Handle
	if err := syscall.RegOpenKeyEx(syscall.HKEY_LOCAL_MACHINE, key, 0, syscall.KEY_READ, &h); err != nil {
		return "", fmt.Errorf("read boot id: %v: %w", err, ErrUnsupported)
	}
	defer syscall.RegCloseKey(h)
	name, err := syscall.UTF16PtrFromString("BootId")
	if err != nil {
		return "", err
	}
	var typ, val uint32
	n := uint32(unsafe.Sizeof(val))
	if err := syscall.RegQueryValueEx(h, name, nil, &typ, (*byte)(unsafe.Pointer(&val)), &n); err != nil || typ != syscall.REG_DWORD {
		return "", fmt.Errorf("read boot id: %v: %w", err, ErrUnsupported)
	}
	return "bootid-" + strconv.FormatUint(uint64(val), 10), nil
}

// ProcessExe returns the full path of pid's executable
// (QueryFullProcessImageNameW).
func ProcessExe(pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	h, err := syscall.OpenProcess(processQueryLimitedInformation, false, uint32(pid))
	if err != nil {
		return "", fmt.Errorf("pid %d: %v: %w", pid, err, ErrNoProcess)
	}
	defer syscall.CloseHandle(h)
	buf := make([]uint16, syscall.MAX_LONG_PATH)
	n := uint32(len(buf))
	if ok, _, err := procQueryFullProcessImageNameW.Call(uintptr(h), 0, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n))); ok == 0 {
		return "", fmt.Errorf("executable of pid %d: %w", pid, err)
	}
	return syscall.UTF16ToString(buf[:n]), nil
}

// ProcessArgs is not available on Windows.
func ProcessArgs(pid int) ([]string, error) {
	return nil, fmt.Errorf("command line of pid %d: %w", pid, ErrUnsupported)
}

// FindMarked is not supported on Windows: a lost node record cannot be
// rebuilt from the running processes.
func FindMarked(key, value string) ([]Marked, error) {
	return nil, fmt.Errorf("find marked processes: %w", ErrUnsupported)
}
