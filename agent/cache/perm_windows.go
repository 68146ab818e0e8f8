//go:build windows

package cache

import "io/fs"

// noFollow: Windows has no O_NOFOLLOW; os.Root keeps every open inside the
// cache and openRegular refuses anything but a regular file.
const noFollow = 0

// checkPrivate is a no-op on Windows: access is governed by ACLs, which the
// default cache dir (%LocalAppData%) restricts to the user.
func checkPrivate(path string, fi fs.FileInfo) error { return nil }

// linkCount is not checked on Windows.
func linkCount(fi fs.FileInfo) uint64 { return 1 }
