/* pyssh._ssh.Key: one libssh key (ssh_key), public or private.
 *
 * The primitives only: make, import and export through libssh's key API. The
 * policy (argument checks, comments, files, fingerprints, messages) lives in
 * pyssh/_keys.py, whose Key subclasses this type. A Key never changes once
 * made, so it needs no lock: the GIL is released around the slow calls (RSA
 * generation, a passphrase's key derivation) with the key used by one thread. */
#include "pyssh.h"

#include <string.h>

/* Results of _from_private beside a Key (the same values as session.c's). */
#define KEY_ENCRYPTED 10 /* the key needs a passphrase and none was given */
#define KEY_UNUSABLE  11 /* not a private key libssh can read, or wrong passphrase */

typedef struct {
    PyObject_HEAD ssh_key key; /* never NULL once made by a class method */
} KeyObject;

static void
key_dealloc(KeyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyType_HasFeature(tp, Py_TPFLAGS_HAVE_GC)) {
        PyObject_GC_UnTrack(self); /* a Python subclass (with a __dict__) is tracked */
    }
    ssh_key_free(self->key);
    self->key = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* A new instance of `cls` (a subclass) owning `key`; frees the key on failure. */
static PyObject *
key_wrap(PyTypeObject *cls, ssh_key key)
{
    KeyObject *self = (KeyObject *)cls->tp_alloc(cls, 0);
    if (self == NULL) {
        ssh_key_free(key);
        return NULL;
    }
    self->key = key;
    return (PyObject *)self;
}

static int
key_ready(KeyObject *self)
{
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "this Key holds no key: make one with pyssh.read_key "
                                          "or pyssh.generate_key");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(key_generate_doc,
             "_generate($cls, type, bits, /)\n--\n\n"
             "A new private key: type \"ed25519\", \"ecdsa\" (bits 256, 384 or 521) or \"rsa\"\n"
             "(bits). The arguments are checked by pyssh._keys.");

static PyObject *
key_generate(PyTypeObject *cls, PyObject *args)
{
    const char *type;
    int bits;
    if (!PyArg_ParseTuple(args, "si:_generate", &type, &bits)) {
        return NULL;
    }
    enum ssh_keytypes_e t = SSH_KEYTYPE_UNKNOWN;
    if (strcmp(type, "ed25519") == 0) {
        t = SSH_KEYTYPE_ED25519;
    }
    else if (strcmp(type, "rsa") == 0) {
        t = SSH_KEYTYPE_RSA;
    }
    else if (strcmp(type, "ecdsa") == 0) {
        t = bits == 256   ? SSH_KEYTYPE_ECDSA_P256
            : bits == 384 ? SSH_KEYTYPE_ECDSA_P384
            : bits == 521 ? SSH_KEYTYPE_ECDSA_P521
                          : SSH_KEYTYPE_UNKNOWN;
    }
    if (t == SSH_KEYTYPE_UNKNOWN) {
        return PyErr_Format(PyExc_ValueError, "cannot make a %s key of %d bits", type, bits);
    }
    ssh_key key = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ssh_pki_generate(t, bits, &key);
    Py_END_ALLOW_THREADS
    if (rc != SSH_OK || key == NULL) {
        ssh_key_free(key);
        return PyErr_Format(PyExc_RuntimeError, "libssh failed to make a %s key", type);
    }
    return key_wrap(cls, key);
}

/* Called by libssh when a key is encrypted and no passphrase was given: never
 * prompt (OpenSSL would, on the terminal); remember that one was needed. */
static int
key_no_prompt(const char *prompt, char *buf, size_t len, int echo, int verify, void *userdata)
{
    (void)prompt;
    (void)buf;
    (void)len;
    (void)echo;
    (void)verify;
    *(int *)userdata = 1;
    return SSH_ERROR;
}

PyDoc_STRVAR(key_from_private_doc,
             "_from_private($cls, text, passphrase=None, /)\n--\n\n"
             "A private key from its text (bytes, OpenSSH or PEM format): a Key, or\n"
             "KEY_ENCRYPTED (a passphrase is needed and none was given) or KEY_UNUSABLE\n"
             "(not a key libssh can read, or a wrong passphrase).");

static PyObject *
key_from_private(PyTypeObject *cls, PyObject *args)
{
    const char *data;
    Py_ssize_t len;
    const char *passphrase = NULL;
    if (!PyArg_ParseTuple(args, "y#|z:_from_private", &data, &len, &passphrase)) {
        return NULL;
    }
    if ((Py_ssize_t)strlen(data) != len) {
        PyErr_SetString(PyExc_ValueError, "the key text contains a NUL byte");
        return NULL;
    }
    ssh_key key = NULL;
    int asked = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ssh_pki_import_privkey_base64(data, passphrase, passphrase ? NULL : key_no_prompt, &asked,
                                       &key);
    Py_END_ALLOW_THREADS
    if (rc != SSH_OK || key == NULL) {
        ssh_key_free(key);
        return PyLong_FromLong(asked ? KEY_ENCRYPTED : KEY_UNUSABLE);
    }
    return key_wrap(cls, key);
}

PyDoc_STRVAR(key_from_public_doc,
             "_from_public($cls, type, base64, /)\n--\n\n"
             "A public key from its type name and base64 blob (a .pub line's first two\n"
             "fields); None when libssh cannot read it.");

static PyObject *
key_from_public(PyTypeObject *cls, PyObject *args)
{
    const char *type, *b64;
    if (!PyArg_ParseTuple(args, "ss:_from_public", &type, &b64)) {
        return NULL;
    }
    enum ssh_keytypes_e t = ssh_key_type_from_name(type);
    ssh_key key = NULL;
    if (t == SSH_KEYTYPE_UNKNOWN || ssh_pki_import_pubkey_base64(b64, t, &key) != SSH_OK) {
        ssh_key_free(key);
        Py_RETURN_NONE;
    }
    return key_wrap(cls, key);
}

PyDoc_STRVAR(key_private_text_doc,
             "_private_text($self, passphrase=None, /)\n--\n\n"
             "The private key in OpenSSH format (bytes), encrypted with `passphrase` if given.");

static PyObject *
key_private_text(KeyObject *self, PyObject *args)
{
    const char *passphrase = NULL;
    if (!PyArg_ParseTuple(args, "|z:_private_text", &passphrase) || key_ready(self) < 0) {
        return NULL;
    }
    if (!ssh_key_is_private(self->key)) {
        PyErr_SetString(PyExc_ValueError, "this Key is a public key only: it has no private part");
        return NULL;
    }
    char *b64 = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ssh_pki_export_privkey_base64_format(self->key, passphrase, NULL, NULL, &b64,
                                              SSH_FILE_FORMAT_OPENSSH);
    Py_END_ALLOW_THREADS
    if (rc != SSH_OK || b64 == NULL) {
        ssh_string_free_char(b64);
        PyErr_SetString(PyExc_RuntimeError, "libssh failed to export the private key");
        return NULL;
    }
    PyObject *r = PyBytes_FromString(b64);
    /* the text is the secret key itself: wipe libssh's copy before freeing it */
    memset(b64, 0, strlen(b64));
    ssh_string_free_char(b64);
    return r;
}

PyDoc_STRVAR(key_public_doc, "_public($self, /)\n--\n\n"
                             "(type name, base64 blob): the public key as in a .pub line.");

static PyObject *
key_public(KeyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (key_ready(self) < 0) {
        return NULL;
    }
    char *b64 = NULL;
    if (ssh_pki_export_pubkey_base64(self->key, &b64) != SSH_OK || b64 == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libssh failed to export the public key");
        return NULL;
    }
    enum ssh_keytypes_e t = ssh_key_type(self->key);
    const char *name = ssh_key_type_to_char(t);
    if (t == SSH_KEYTYPE_ECDSA_P256 || t == SSH_KEYTYPE_ECDSA_P384 || t == SSH_KEYTYPE_ECDSA_P521) {
        name = ssh_pki_key_ecdsa_name(self->key); /* "ecdsa-sha2-nistp256", not "ecdsa" */
    }
    PyObject *r = Py_BuildValue("(ss)", name ? name : "unknown", b64);
    ssh_string_free_char(b64);
    return r;
}

static PyObject *
key_get_has_private(KeyObject *self, void *closure)
{
    (void)closure;
    if (key_ready(self) < 0) {
        return NULL;
    }
    return PyBool_FromLong(ssh_key_is_private(self->key));
}

#ifdef PYSSH_LIBSSH_HOST_CERTIFICATES
PyDoc_STRVAR(key_verify_signature_doc,
             "_verify_signature(key_blob, signature, data, /)\n--\n\n"
             "Whether `signature` (an SSH signature blob: algorithm, signature) is a valid\n"
             "signature of `data` by the plain public key `key_blob`: a CA's signature over\n"
             "a host certificate. False for anything malformed or unsupported.");

static PyObject *
key_verify_signature(PyObject *Py_UNUSED(cls), PyObject *args)
{
    Py_buffer key, sig, data;
    if (!PyArg_ParseTuple(args, "y*y*y*:_verify_signature", &key, &sig, &data)) {
        return NULL;
    }
    int rc;
    /* the buffers stay valid without the GIL: bytes are immutable, and the
     * Py_buffer holds a reference */
    Py_BEGIN_ALLOW_THREADS
    rc = ssh_pki_verify_signature_blob(key.buf, (size_t)key.len, sig.buf, (size_t)sig.len, data.buf,
                                       (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&key);
    PyBuffer_Release(&sig);
    PyBuffer_Release(&data);
    return PyBool_FromLong(rc == SSH_OK);
}
#endif

static PyMethodDef key_methods[] = {
    {"_generate", (PyCFunction)key_generate, METH_VARARGS | METH_CLASS, key_generate_doc},
    {"_from_private", (PyCFunction)key_from_private, METH_VARARGS | METH_CLASS,
     key_from_private_doc},
    {"_from_public", (PyCFunction)key_from_public, METH_VARARGS | METH_CLASS, key_from_public_doc},
    {"_private_text", (PyCFunction)key_private_text, METH_VARARGS, key_private_text_doc},
    {"_public", (PyCFunction)key_public, METH_NOARGS, key_public_doc},
#ifdef PYSSH_LIBSSH_HOST_CERTIFICATES
    {"_verify_signature", (PyCFunction)key_verify_signature, METH_VARARGS | METH_STATIC,
     key_verify_signature_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef key_getset[] = {
    {"has_private", (getter)key_get_has_private, NULL, "the key has its private part", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot key_slots[] = {
    {Py_tp_doc, "An SSH key (libssh's ssh_key): see pyssh.Key."},
    {Py_tp_dealloc, key_dealloc},
    {Py_tp_methods, key_methods},
    {Py_tp_getset, key_getset},
    {0, NULL},
};

PyType_Spec pyssh_key_spec = {
    .name = "pyssh._ssh.Key",
    .basicsize = sizeof(KeyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = key_slots,
};
