/* The one rule for names that come from a server (SCP headers, SFTP directory
 * listings) before any of them becomes part of a local path: a single, non-empty
 * component that cannot climb out of, or point beside, the directory the user
 * named. scp.c and sftpproto.c call it where the name enters; pyssh/_local.py
 * calls it (through name_problem()) for the local platform's rules before a
 * download creates anything. The fuzz harnesses in tests/fuzz/ compile this file
 * on its own (PYSSH_FUZZ), so it needs nothing but the C library. */
#ifndef PYSSH_FUZZ
#include "pyssh.h"
#endif

#include <stddef.h>
#include <string.h>

static int
lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Does name[0:n] equal `word`, ignoring ASCII case? */
static int
same_word(const char *name, size_t n, const char *word)
{
    if (strlen(word) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (lower((unsigned char)name[i]) != word[i]) {
            return 0;
        }
    }
    return 1;
}

/* Windows opens a device, not a file, for these names, whatever the directory
 * and extension ("nul.txt", "COM1 .log", "lpt\xc2\xb9"): a download must never
 * write to one. */
static int
windows_device(const char *name, size_t n)
{
    static const char *const devices[] = {"con", "prn", "aux", "nul", "conin$", "conout$"};
    const char *dot = memchr(name, '.', n);
    size_t k = dot != NULL ? (size_t)(dot - name) : n;
    while (k > 0 && name[k - 1] == ' ') {
        k--;
    }
    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++) {
        if (same_word(name, k, devices[i])) {
            return 1;
        }
    }
    if (k < 4 || !(same_word(name, 3, "com") || same_word(name, 3, "lpt"))) {
        return 0;
    }
    const char *d = name + 3;
    size_t dn = k - 3;
    if (dn == 1 && d[0] >= '0' && d[0] <= '9') {
        return 1;
    }
    /* superscript 1, 2, 3 in UTF-8: c2 b9, c2 b2, c2 b3 */
    return dn == 2 && (unsigned char)d[0] == 0xc2 &&
           ((unsigned char)d[1] == 0xb9 || (unsigned char)d[1] == 0xb2 ||
            (unsigned char)d[1] == 0xb3);
}

static const char *
windows_problem(const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 32) {
            return "a name with a control character in it (not a file name on Windows)";
        }
        if (c == '\\') {
            return "a name with '\\' in it (a path on Windows)";
        }
        if (c == ':') {
            return "a name with ':' in it (a drive or a data stream on Windows)";
        }
        if (strchr("<>\"|?*", c) != NULL) {
            return "a name with one of < > \" | ? * in it (not a file name on Windows)";
        }
    }
    if (name[n - 1] == '.' || name[n - 1] == ' ') {
        return "a name ending in '.' or ' ' (Windows drops them: another file's name)";
    }
    if (windows_device(name, n)) {
        return "a reserved device name on Windows (CON, PRN, AUX, NUL, COM1, LPT1...)";
    }
    return NULL;
}

/* NULL when name[0:n] is safe as one component of a local path; otherwise why
 * not. `windows`: also apply Windows' rules (the local system's, or a test's). */
const char *
pyssh_name_problem(const char *name, size_t n, int windows)
{
    if (n == 0) {
        return "an empty name";
    }
    if ((n == 1 && name[0] == '.') || (n == 2 && name[0] == '.' && name[1] == '.')) {
        return "the name '.' or '..' (it would write outside the target directory)";
    }
    if (memchr(name, '/', n) != NULL) {
        return "a name with '/' in it (it would write outside the target directory)";
    }
    if (memchr(name, '\0', n) != NULL) {
        return "a name with a NUL byte in it";
    }
    return windows ? windows_problem(name, n) : NULL;
}

#ifndef PYSSH_FUZZ

PyDoc_STRVAR(name_problem_doc,
             "name_problem(name, /, windows=None)\n--\n\n"
             "Why `name` (bytes, from a server) is not safe as one component of a local path,\n"
             "or None when it is. `windows`: apply Windows' rules too (default: this system's).");

static PyObject *
name_problem_py(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "windows", NULL};
    Py_buffer view;
    PyObject *wobj = Py_None;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|O:name_problem", kwlist, &view, &wobj)) {
        return NULL;
    }
    int windows = wobj == Py_None ? PYSSH_WINDOWS_PATHS : PyObject_IsTrue(wobj);
    const char *why = windows < 0 ? NULL : pyssh_name_problem(view.buf, (size_t)view.len, windows);
    PyBuffer_Release(&view);
    if (windows < 0) {
        return NULL;
    }
    if (why == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(why);
}

PyMethodDef pyssh_names_methods[] = {
    {"name_problem", (PyCFunction)(void (*)(void))name_problem_py, METH_VARARGS | METH_KEYWORDS,
     name_problem_doc},
    {NULL, NULL, 0, NULL},
};

#endif
