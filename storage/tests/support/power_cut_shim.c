/*
 * An LD_PRELOAD library that keeps, beside a directory, a "durable image" of it: what the
 * directory (with everything below it) would hold after a power cut. `storage/tests/power_cut.rs`
 * and `cli/tests/power_cut.rs` compile it, run a writer process (or whole nodes) under it, kill
 * the process and rebuild the directory from the image (`support/power_cut.rs`).
 *
 * Environment (the library does nothing without the first two):
 *   RAFTOR_POWER_CUT_DIR       the watched directory; it must exist when the process starts
 *   RAFTOR_POWER_CUT_IMAGE     where the image is kept (outside the watched directory)
 *   RAFTOR_POWER_CUT_UNSYNCED  optional file name suffix (".log"): fsync and fdatasync of files
 *                              whose name ends with it do nothing and report success, as if the
 *                              program never asked for them
 *
 * The model: what survives a power cut (strict POSIX, as crash-consistency checkers take it):
 *  - a file's bytes and length as of its last fsync or fdatasync, on any descriptor. Writes,
 *    truncations and allocations since are lost. close, sync_file_range and the death of the
 *    process make nothing durable. A file opened with O_SYNC or O_DSYNC is synced by each write.
 *  - each directory's entries (the names, and which file or directory each names) as of that
 *    directory's last fsync. Creating, renaming or unlinking a file or a directory is lost until
 *    the directory holding the name is synced; a name that is durable but whose file never was
 *    synced is an empty file, and one whose directory never was synced an empty directory.
 *  - what the directory holds when the process starts (files and directories) is durable.
 *  - an fsync in flight at the cut may have reached the image in part (a prefix of what it
 *    copies): such a sync never returned, so nothing it covers was acknowledged.
 * Regular files and directories below the directory are modelled, each followed from its
 * creation (or from the start). Ways of changing them that the model does not follow (writable
 * shared mappings, stdio streams, hard links, copy_file_range, sendfile, sync(), other kinds of
 * files, RENAME_EXCHANGE) abort the process with a message, so that nothing is missed silently.
 *
 * The image: IMAGE/files/<n> holds the durable bytes of file number n (numbers are never reused,
 * unlike inode numbers), and IMAGE/dirs/<n> the durable entries of directory number n, one
 * "f <file> <name>" or "d <directory> <name>" per line, replaced atomically; the watched directory
 * is number 1; IMAGE/taken exists once the image of the start is whole (a process killed before
 * that had not run, and left the directory as it was). A file or directory is numbered when it
 * is first seen; files[] keeps, for each
 * file, which bytes changed since its last sync. A sync copies those bytes from the file into the
 * image, or, of a directory, lists its entries there.
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* glibc's entry points for open under _FORTIFY_SOURCE. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

#define MAX_FDS 65536
#define MAX_FILES 65536

/* A file's or directory's life below the directory: the inode it is, and what changed since its
 * last sync. */
struct file {
    dev_t dev;
    ino_t ino;
    int linked; /* found by its inode: not yet unlinked for good (inode numbers are reused) */
    int is_dir;
    off_t lo, hi; /* every byte that may differ from the image is in [lo, hi) (none if lo >= hi) */
    off_t cut; /* the shortest length it was truncated to since its last sync, or -1 */
};

/* What a descriptor refers to: file or directory number `id` (0 if none). */
struct fd_entry {
    int id;
    int sync_writes; /* opened O_SYNC or O_DSYNC */
    dev_t dev;
    ino_t ino;
};

static int active;
static char dir[PATH_MAX];
static size_t dir_len;
static char image[PATH_MAX];
static const char *unsynced_suffix;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct file files[MAX_FILES]; /* file number n is files[n - 1] */
static int file_count;
static struct fd_entry fds[MAX_FDS];
static char copy_buf[1 << 20];
static char names_buf[1 << 20];

/* The next definition of each function: libc's. */
#define DECLARE_REAL(name)                                                                          \
    static __typeof__(&name) real_##name;                                                           \
    static __typeof__(&name) get_##name(void) {                                                     \
        if (!real_##name)                                                                           \
            real_##name = (__typeof__(&name))next(#name);                                           \
        return real_##name;                                                                         \
    }
#define REAL(name) (get_##name())

static void die(const char *what, const char *detail);

static void *next(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        die("no next definition of", name);
    return f;
}

DECLARE_REAL(open)
DECLARE_REAL(open64)
DECLARE_REAL(openat)
DECLARE_REAL(openat64)
DECLARE_REAL(creat)
DECLARE_REAL(creat64)
DECLARE_REAL(__open_2)
DECLARE_REAL(__open64_2)
DECLARE_REAL(__openat_2)
DECLARE_REAL(__openat64_2)
DECLARE_REAL(close)
DECLARE_REAL(dup)
DECLARE_REAL(dup2)
DECLARE_REAL(dup3)
DECLARE_REAL(write)
DECLARE_REAL(writev)
DECLARE_REAL(pwrite)
DECLARE_REAL(pwrite64)
DECLARE_REAL(pwritev)
DECLARE_REAL(pwritev64)
DECLARE_REAL(pwritev2)
DECLARE_REAL(pwritev64v2)
DECLARE_REAL(ftruncate)
DECLARE_REAL(ftruncate64)
DECLARE_REAL(truncate)
DECLARE_REAL(truncate64)
DECLARE_REAL(fallocate)
DECLARE_REAL(fallocate64)
DECLARE_REAL(posix_fallocate)
DECLARE_REAL(posix_fallocate64)
DECLARE_REAL(fsync)
DECLARE_REAL(fdatasync)
DECLARE_REAL(sync)
DECLARE_REAL(syncfs)
DECLARE_REAL(rename)
DECLARE_REAL(renameat)
DECLARE_REAL(renameat2)
DECLARE_REAL(unlink)
DECLARE_REAL(unlinkat)
DECLARE_REAL(rmdir)
DECLARE_REAL(link)
DECLARE_REAL(linkat)
DECLARE_REAL(mmap)
DECLARE_REAL(mmap64)
DECLARE_REAL(copy_file_range)
DECLARE_REAL(sendfile)
DECLARE_REAL(sendfile64)
DECLARE_REAL(fopen)
DECLARE_REAL(fopen64)
DECLARE_REAL(fdopen)

static void die(const char *what, const char *detail) {
    char msg[PATH_MAX + 256];
    int n = snprintf(msg, sizeof msg, "power_cut_shim: %s %s\n", what, detail);
    if (n > 0)
        (void)syscall(SYS_write, 2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

static void lock(void) { pthread_mutex_lock(&mu); }
static void unlock(void) { pthread_mutex_unlock(&mu); }

/* Under mu: the number of the file (or directory) that is inode (dev, ino) now, numbering it if
 * it has none. An inode of the other kind was unlinked unseen and its number reused: forgotten. */
static int file_of(dev_t dev, ino_t ino, int is_dir) {
    for (int i = file_count; i-- > 0;)
        if (files[i].linked && files[i].ino == ino && files[i].dev == dev) {
            if (files[i].is_dir == is_dir)
                return i + 1;
            files[i].linked = 0;
        }
    if (file_count == MAX_FILES)
        die("too many files", "");
    files[file_count] = (struct file){dev, ino, 1, is_dir, 0, 0, -1};
    return ++file_count;
}

/* Under mu: the inode (dev, ino) is gone; a new file may get its number. */
static void forget_inode(dev_t dev, ino_t ino) {
    for (int i = 0; i < file_count; i++)
        if (files[i].linked && files[i].ino == ino && files[i].dev == dev)
            files[i].linked = 0;
}

static int is_known_inode(const struct stat *st) {
    lock();
    int known = 0;
    for (int i = 0; i < file_count && !known; i++)
        known = files[i].linked && files[i].ino == st->st_ino && files[i].dev == st->st_dev;
    unlock();
    return known;
}

/* The file or directory number `fd` refers to: 0 if none. */
static int watched(int fd) {
    if (!active || fd < 0 || fd >= MAX_FDS || fds[fd].id == 0)
        return 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_ino != fds[fd].ino || st.st_dev != fds[fd].dev) {
        /* Closed behind our back (by a call not followed) and the number reused. */
        fds[fd].id = 0;
        return 0;
    }
    return fds[fd].id;
}

/* The path `fd` refers to, in `path` (PATH_MAX bytes); its length, or -1. */
static ssize_t fd_path(int fd, char *path) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX - 1);
    if (n >= 0)
        path[n] = 0;
    return n;
}

/* Whether `fd` refers to the watched directory or to something below it (its path in `path`). */
static int in_dir(int fd, char *path) {
    ssize_t n = fd_path(fd, path);
    if (n < 0 || (size_t)n < dir_len || memcmp(path, dir, dir_len) != 0)
        return 0;
    return (size_t)n == dir_len || path[dir_len] == '/';
}

static int is_file(int id) { return id > 0 && !files[id - 1].is_dir; }

static void opened(int fd, int flags) {
    if (!active || fd < 0 || fd >= MAX_FDS)
        return;
    fds[fd].id = 0;
    int saved = errno;
    char path[PATH_MAX];
    struct stat st;
    if (in_dir(fd, path) && fstat(fd, &st) == 0) {
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            die("unmodelled: neither a regular file nor a directory:", path);
        lock();
        int id = file_of(st.st_dev, st.st_ino, S_ISDIR(st.st_mode));
        if ((flags & O_TRUNC) && S_ISREG(st.st_mode))
            files[id - 1].cut = 0;
        unlock();
        fds[fd] = (struct fd_entry){id, (flags & O_DSYNC) != 0, st.st_dev, st.st_ino};
    }
    errno = saved;
}

static void note_changed(int id, off_t lo, off_t hi) {
    lock();
    struct file *f = &files[id - 1];
    if (f->lo >= f->hi) {
        f->lo = lo;
        f->hi = hi;
    } else {
        if (lo < f->lo)
            f->lo = lo;
        if (hi > f->hi)
            f->hi = hi;
    }
    unlock();
}

static void note_cut(int id, off_t len) {
    lock();
    struct file *f = &files[id - 1];
    if (f->cut < 0 || len < f->cut)
        f->cut = len;
    unlock();
}

static void copy_range(int in, int out, off_t from, off_t to, const char *what) {
    while (from < to) {
        size_t want = (size_t)(to - from) < sizeof copy_buf ? (size_t)(to - from) : sizeof copy_buf;
        ssize_t n = pread(in, copy_buf, want, from);
        if (n <= 0)
            die("cannot read, to copy into the image:", what);
        if (REAL(pwrite)(out, copy_buf, (size_t)n, from) != n)
            die("cannot write into the image:", what);
        from += n;
    }
}

/* The sync of file `id`, open as `fd`: copy what changed since its last sync into the image. */
static void publish_file(int fd, int id) {
    char link[64], out_path[PATH_MAX + 32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    snprintf(out_path, sizeof out_path, "%s/files/%d", image, id);
    lock();
    struct file *f = &files[id - 1];
    off_t lo = f->lo, hi = f->hi, cut = f->cut;
    f->lo = f->hi = 0;
    f->cut = -1;
    int in = REAL(open)(link, O_RDONLY | O_CLOEXEC);
    int out = REAL(open)(out_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (in < 0 || out < 0 || fstat(in, &st) != 0)
        die("cannot copy a synced file into the image:", out_path);
    if (cut >= 0 && REAL(ftruncate)(out, cut) != 0)
        die("cannot truncate in the image:", out_path);
    copy_range(in, out, lo, hi < st.st_size ? hi : st.st_size, out_path);
    if (REAL(ftruncate)(out, st.st_size) != 0)
        die("cannot size in the image:", out_path);
    REAL(close)(in);
    REAL(close)(out);
    unlock();
}

static void write_all(int fd, const char *buf, size_t len, const char *what) {
    while (len > 0) {
        ssize_t n = REAL(write)(fd, buf, len);
        if (n <= 0)
            die("cannot write", what);
        buf += n;
        len -= (size_t)n;
    }
}

/* The sync of directory number `id`, at `path`: its entries now become the durable ones. */
static void publish_names(const char *path, int id) {
    char tmp[PATH_MAX + 32], names[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/dirs/%d.tmp", image, id);
    snprintf(names, sizeof names, "%s/dirs/%d", image, id);
    lock();
    DIR *d = opendir(path);
    if (!d)
        die("cannot list", path);
    size_t len = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* unlinked meanwhile */
        int is_dir = S_ISDIR(st.st_mode);
        if ((!S_ISREG(st.st_mode) && !is_dir) || strchr(e->d_name, '\n'))
            die("unmodelled: not a regular file or directory with a plain name:", e->d_name);
        int n = snprintf(names_buf + len, sizeof names_buf - len, "%c %d %s\n", is_dir ? 'd' : 'f',
                         file_of(st.st_dev, st.st_ino, is_dir), e->d_name);
        if (n < 0 || (size_t)n >= sizeof names_buf - len)
            die("too many names in", path);
        len += (size_t)n;
    }
    closedir(d);
    int out = REAL(open)(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        die("cannot create", tmp);
    write_all(out, names_buf, len, tmp);
    REAL(close)(out);
    if (REAL(rename)(tmp, names) != 0)
        die("cannot replace", names);
    unlock();
}

static int skips_sync(int fd) {
    if (!unsynced_suffix)
        return 0;
    char path[PATH_MAX];
    ssize_t n = fd_path(fd, path);
    size_t s = strlen(unsynced_suffix);
    return n >= (ssize_t)s && !strcmp(path + n - s, unsynced_suffix);
}

/* Before a sync of `fd`: applies it to the image; returns 1 if the sync is to be skipped. */
static int syncing(int fd) {
    int id = watched(fd);
    if (!id)
        return 0;
    int saved = errno, skip = 0;
    char path[PATH_MAX];
    if (!is_file(id)) {
        if (fd_path(fd, path) < 0)
            die("cannot find the directory synced", "");
        publish_names(path, id);
    } else if (skips_sync(fd))
        skip = 1;
    else
        publish_file(fd, id);
    errno = saved;
    return skip;
}

/* After `n` bytes were written to `fd` at `at` (-1: at the file position, now after them). */
static void wrote(int fd, off_t at, ssize_t n, int sync) {
    if (n <= 0)
        return;
    int id = watched(fd);
    if (!is_file(id))
        return;
    int saved = errno;
    if (at < 0)
        at = lseek(fd, 0, SEEK_CUR) - n;
    note_changed(id, at, at + n);
    if (sync || fds[fd].sync_writes)
        publish_file(fd, id);
    errno = saved;
}

/* Before `path` (at `dirfd`) is unlinked or replaced: the inode it names, if that is its last
 * name (a directory has only one). */
static int last_name(int dirfd, const char *path, struct stat *st) {
    return active && fstatat(dirfd, path, st, AT_SYMLINK_NOFOLLOW) == 0 &&
           (S_ISDIR(st->st_mode) || (S_ISREG(st->st_mode) && st->st_nlink == 1));
}

static void unlinked(int done, int last, const struct stat *st) {
    if (done == 0 && last) {
        lock();
        forget_inode(st->st_dev, st->st_ino);
        unlock();
    }
}

static void copy_file(const char *from, const char *to) {
    int in = REAL(open)(from, O_RDONLY | O_CLOEXEC);
    int out = REAL(open)(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    struct stat st;
    if (in < 0 || out < 0 || fstat(in, &st) != 0)
        die("cannot copy into the image:", from);
    copy_range(in, out, 0, st.st_size, from);
    REAL(close)(in);
    REAL(close)(out);
}

/* At the start: what the directory at `path` holds, below it too, is durable. */
static void take_as_durable(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        die("cannot stat", path);
    lock();
    int id = file_of(st.st_dev, st.st_ino, 1);
    unlock();
    publish_names(path, id);
    DIR *d = opendir(path);
    if (!d)
        die("cannot list", path);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char from[PATH_MAX], to[PATH_MAX + 32];
        if (snprintf(from, sizeof from, "%s/%s", path, e->d_name) >= (int)sizeof from)
            die("a path too long below", path);
        if (lstat(from, &st) != 0)
            die("cannot stat", from);
        if (S_ISDIR(st.st_mode)) {
            take_as_durable(from);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            die("unmodelled: neither a regular file nor a directory:", from);
        lock();
        int file = file_of(st.st_dev, st.st_ino, 0);
        unlock();
        snprintf(to, sizeof to, "%s/files/%d", image, file);
        copy_file(from, to);
    }
    closedir(d);
}

__attribute__((constructor)) static void init(void) {
    const char *d = getenv("RAFTOR_POWER_CUT_DIR"), *img = getenv("RAFTOR_POWER_CUT_IMAGE");
    if (!d || !img)
        return;
    if (!realpath(d, dir))
        die("the watched directory does not exist:", d);
    dir_len = strlen(dir);
    if (snprintf(image, sizeof image, "%s", img) >= (int)sizeof image - 64)
        die("the image path is too long:", img);
    const char *suffix = getenv("RAFTOR_POWER_CUT_UNSYNCED");
    unsynced_suffix = suffix && *suffix ? suffix : NULL;
    char files_dir[PATH_MAX + 32], dirs_dir[PATH_MAX + 32];
    snprintf(files_dir, sizeof files_dir, "%s/files", image);
    snprintf(dirs_dir, sizeof dirs_dir, "%s/dirs", image);
    if ((mkdir(image, 0755) != 0 && errno != EEXIST) ||
        (mkdir(files_dir, 0755) != 0 && errno != EEXIST) ||
        (mkdir(dirs_dir, 0755) != 0 && errno != EEXIST))
        die("cannot create the image in", image);
    /* What the directory holds now is durable; it is number 1. */
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        die("the watched directory is not a directory:", dir);
    lock();
    file_of(st.st_dev, st.st_ino, 1);
    unlock();
    active = 1;
    take_as_durable(dir);
    /* The image is whole: a process killed before this (its constructor still copying) had not
     * changed the directory, and the image is to be ignored. */
    char taken[PATH_MAX + 32];
    snprintf(taken, sizeof taken, "%s/taken", image);
    int fd = REAL(open)(taken, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        die("cannot create", taken);
    REAL(close)(fd);
}

/* Opening. */

static int needs_mode(int flags) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

#define MODE_ARG(flags)                                                                             \
    mode_t mode = 0;                                                                                \
    if (needs_mode(flags)) {                                                                        \
        va_list ap;                                                                                 \
        va_start(ap, flags);                                                                        \
        mode = (mode_t)va_arg(ap, int);                                                             \
        va_end(ap);                                                                                 \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG(flags)
    int fd = REAL(open)(path, flags, mode);
    opened(fd, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    MODE_ARG(flags)
    int fd = REAL(open64)(path, flags, mode);
    opened(fd, flags);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags)
    int fd = REAL(openat)(dirfd, path, flags, mode);
    opened(fd, flags);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags)
    int fd = REAL(openat64)(dirfd, path, flags, mode);
    opened(fd, flags);
    return fd;
}

int creat(const char *path, mode_t mode) {
    int fd = REAL(creat)(path, mode);
    opened(fd, O_CREAT | O_WRONLY | O_TRUNC);
    return fd;
}

int creat64(const char *path, mode_t mode) {
    int fd = REAL(creat64)(path, mode);
    opened(fd, O_CREAT | O_WRONLY | O_TRUNC);
    return fd;
}

int __open_2(const char *path, int flags) {
    int fd = REAL(__open_2)(path, flags);
    opened(fd, flags);
    return fd;
}

int __open64_2(const char *path, int flags) {
    int fd = REAL(__open64_2)(path, flags);
    opened(fd, flags);
    return fd;
}

int __openat_2(int dirfd, const char *path, int flags) {
    int fd = REAL(__openat_2)(dirfd, path, flags);
    opened(fd, flags);
    return fd;
}

int __openat64_2(int dirfd, const char *path, int flags) {
    int fd = REAL(__openat64_2)(dirfd, path, flags);
    opened(fd, flags);
    return fd;
}

int close(int fd) {
    if (fd >= 0 && fd < MAX_FDS)
        fds[fd].id = 0;
    return REAL(close)(fd);
}

static void duplicated(int from, int to) {
    if (to < 0 || to >= MAX_FDS)
        return;
    fds[to].id = 0;
    if (watched(from))
        fds[to] = fds[from];
}

int dup(int fd) {
    int to = REAL(dup)(fd);
    duplicated(fd, to);
    return to;
}

int dup2(int fd, int to) {
    int r = REAL(dup2)(fd, to);
    duplicated(fd, r);
    return r;
}

int dup3(int fd, int to, int flags) {
    int r = REAL(dup3)(fd, to, flags);
    duplicated(fd, r);
    return r;
}

/* Writing. */

ssize_t write(int fd, const void *buf, size_t len) {
    ssize_t n = REAL(write)(fd, buf, len);
    wrote(fd, -1, n, 0);
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    ssize_t n = REAL(writev)(fd, iov, count);
    wrote(fd, -1, n, 0);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t at) {
    ssize_t n = REAL(pwrite)(fd, buf, len, at);
    wrote(fd, at, n, 0);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t at) {
    ssize_t n = REAL(pwrite64)(fd, buf, len, at);
    wrote(fd, at, n, 0);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t at) {
    ssize_t n = REAL(pwritev)(fd, iov, count, at);
    wrote(fd, at, n, 0);
    return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off64_t at) {
    ssize_t n = REAL(pwritev64)(fd, iov, count, at);
    wrote(fd, at, n, 0);
    return n;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int count, off_t at, int flags) {
    ssize_t n = REAL(pwritev2)(fd, iov, count, at, flags);
    wrote(fd, at, n, (flags & (RWF_DSYNC | RWF_SYNC)) != 0);
    return n;
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int count, off64_t at, int flags) {
    ssize_t n = REAL(pwritev64v2)(fd, iov, count, at, flags);
    wrote(fd, at, n, (flags & (RWF_DSYNC | RWF_SYNC)) != 0);
    return n;
}

static void truncated(int fd, int r, off_t len) {
    int id = r == 0 ? watched(fd) : 0;
    if (is_file(id))
        note_cut(id, len);
}

int ftruncate(int fd, off_t len) {
    int r = REAL(ftruncate)(fd, len);
    truncated(fd, r, len);
    return r;
}

int ftruncate64(int fd, off64_t len) {
    int r = REAL(ftruncate64)(fd, len);
    truncated(fd, r, len);
    return r;
}

static void path_truncated(const char *path, int r, off_t len) {
    struct stat st;
    if (r != 0 || !active || stat(path, &st) != 0 || !is_known_inode(&st))
        return;
    lock();
    int id = file_of(st.st_dev, st.st_ino, 0);
    unlock();
    note_cut(id, len);
}

int truncate(const char *path, off_t len) {
    int r = REAL(truncate)(path, len);
    path_truncated(path, r, len);
    return r;
}

int truncate64(const char *path, off64_t len) {
    int r = REAL(truncate64)(path, len);
    path_truncated(path, r, len);
    return r;
}

/* fallocate zeroes or keeps bytes, and may extend the file: [at, at + len) may differ. */
static void allocated(int fd, int r, int mode, off_t at, off_t len) {
    int id = r == 0 ? watched(fd) : 0;
    if (!is_file(id))
        return;
    if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
        die("unmodelled: fallocate that moves bytes", "");
    note_changed(id, at, at + len);
}

int fallocate(int fd, int mode, off_t at, off_t len) {
    int r = REAL(fallocate)(fd, mode, at, len);
    allocated(fd, r, mode, at, len);
    return r;
}

int fallocate64(int fd, int mode, off64_t at, off64_t len) {
    int r = REAL(fallocate64)(fd, mode, at, len);
    allocated(fd, r, mode, at, len);
    return r;
}

int posix_fallocate(int fd, off_t at, off_t len) {
    int r = REAL(posix_fallocate)(fd, at, len);
    allocated(fd, r, 0, at, len);
    return r;
}

int posix_fallocate64(int fd, off64_t at, off64_t len) {
    int r = REAL(posix_fallocate64)(fd, at, len);
    allocated(fd, r, 0, at, len);
    return r;
}

/* Syncing. sync_file_range is not wrapped: it makes nothing durable. */

int fsync(int fd) {
    if (syncing(fd))
        return 0;
    return REAL(fsync)(fd);
}

int fdatasync(int fd) {
    if (syncing(fd))
        return 0;
    return REAL(fdatasync)(fd);
}

void sync(void) {
    if (active)
        die("unmodelled: sync()", "");
    REAL(sync)();
}

int syncfs(int fd) {
    if (active)
        die("unmodelled: syncfs()", "");
    return REAL(syncfs)(fd);
}

/* Names. */

int rename(const char *from, const char *to) {
    struct stat st;
    int last = last_name(AT_FDCWD, to, &st);
    int r = REAL(rename)(from, to);
    unlinked(r, last, &st);
    return r;
}

int renameat(int from_dir, const char *from, int to_dir, const char *to) {
    struct stat st;
    int last = last_name(to_dir, to, &st);
    int r = REAL(renameat)(from_dir, from, to_dir, to);
    unlinked(r, last, &st);
    return r;
}

int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned int flags) {
    if (active && (flags & RENAME_EXCHANGE))
        die("unmodelled: RENAME_EXCHANGE of", to);
    struct stat st;
    int last = last_name(to_dir, to, &st);
    int r = REAL(renameat2)(from_dir, from, to_dir, to, flags);
    unlinked(r, last, &st);
    return r;
}

int unlink(const char *path) {
    struct stat st;
    int last = last_name(AT_FDCWD, path, &st);
    int r = REAL(unlink)(path);
    unlinked(r, last, &st);
    return r;
}

int unlinkat(int dirfd, const char *path, int flags) {
    struct stat st;
    int last = last_name(dirfd, path, &st);
    int r = REAL(unlinkat)(dirfd, path, flags);
    unlinked(r, last, &st);
    return r;
}

int rmdir(const char *path) {
    struct stat st;
    int last = last_name(AT_FDCWD, path, &st);
    int r = REAL(rmdir)(path);
    unlinked(r, last, &st);
    return r;
}

int link(const char *from, const char *to) {
    struct stat st;
    if (active && stat(from, &st) == 0 && is_known_inode(&st))
        die("unmodelled: a hard link to", from);
    return REAL(link)(from, to);
}

int linkat(int from_dir, const char *from, int to_dir, const char *to, int flags) {
    struct stat st;
    int how = (flags & AT_EMPTY_PATH)       ? AT_EMPTY_PATH
              : (flags & AT_SYMLINK_FOLLOW) ? 0
                                            : AT_SYMLINK_NOFOLLOW;
    if (active && fstatat(from_dir, from, &st, how) == 0 && is_known_inode(&st))
        die("unmodelled: a hard link to", from);
    return REAL(linkat)(from_dir, from, to_dir, to, flags);
}

/* Ways to change a file that the model does not follow. */

static void writable_mapping(int prot, int flags, int fd) {
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED) && is_file(watched(fd)))
        die("unmodelled: a writable shared mapping of a file in", dir);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t at) {
    writable_mapping(prot, flags, fd);
    return REAL(mmap)(addr, len, prot, flags, fd, at);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t at) {
    writable_mapping(prot, flags, fd);
    return REAL(mmap64)(addr, len, prot, flags, fd, at);
}

ssize_t copy_file_range(int in, off64_t *in_at, int out, off64_t *out_at, size_t len,
                        unsigned int flags) {
    if (is_file(watched(out)))
        die("unmodelled: copy_file_range into a file in", dir);
    return REAL(copy_file_range)(in, in_at, out, out_at, len, flags);
}

ssize_t sendfile(int out, int in, off_t *at, size_t count) {
    if (is_file(watched(out)))
        die("unmodelled: sendfile into a file in", dir);
    return REAL(sendfile)(out, in, at, count);
}

ssize_t sendfile64(int out, int in, off64_t *at, size_t count) {
    if (is_file(watched(out)))
        die("unmodelled: sendfile into a file in", dir);
    return REAL(sendfile64)(out, in, at, count);
}

/* A stdio stream writes with libc's internal write, which this library does not see. */
static FILE *stream(FILE *f, const char *mode) {
    char path[PATH_MAX];
    if (f && active && strpbrk(mode, "wa+") && in_dir(fileno(f), path))
        die("unmodelled: a stdio stream writing", path);
    return f;
}

FILE *fopen(const char *path, const char *mode) { return stream(REAL(fopen)(path, mode), mode); }

FILE *fopen64(const char *path, const char *mode) {
    return stream(REAL(fopen64)(path, mode), mode);
}

FILE *fdopen(int fd, const char *mode) { return stream(REAL(fdopen)(fd, mode), mode); }
