/* pyssh._ssh: module init (PEP 489 multi-phase), module state, constants. */
#include "pyssh.h"

/* pyssh's cipher order, set below the user's ssh config (which wins over it).
 * With AES in hardware, AES-GCM is the fastest AEAD cipher (on loopback here, 1 GB
 * of stdout: aes128-gcm 711 MB/s, aes256-gcm 610, chacha20-poly1305 500,
 * aes128-ctr 428) and constant-time, so it goes first. Without it, AES in software
 * is slow and its table lookups leak timing, which is OpenSSH's reason for putting
 * chacha20-poly1305 first: then libssh's own order is kept (""). Same set of
 * ciphers as libssh's default either way: no CBC, no 3DES. */
#define AES_FIRST                                                                                  \
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"                 \
    "aes256-ctr,aes192-ctr,aes128-ctr"

/* ---- named results ------------------------------------------------------------ */

static PyStructSequence_Field run_fields[] = {
    {"exit_status", "the command's exit status, or None (it was killed by a signal)"},
    {"signal", "the name of the signal that ended it (\"TERM\"), or None"},
    {"core_dumped", "the signal dumped core"},
    {"error_message", "the server's message with the signal"},
    {"stdout", "the captured stdout, or None when it was not captured"},
    {"stderr", "the captured stderr, or None when it was not captured"},
    {"stdin_dropped", "the command ended before it read all of stdin"},
    {NULL, NULL},
};
static PyStructSequence_Field recv_fields[] = {
    {"stdout", "stdout's bytes taken (b'': none yet, or none asked for)"},
    {"stderr", "stderr's bytes taken"},
    {"eof", "the command's output ended: nothing more will come"},
    {"ended", "the command ended (its status came) or the server closed the channel"},
    {"fd_ready", "the descriptor given to recv() is readable"},
    {"sent", "how much of recv()'s data was sent"},
    {NULL, NULL},
};
static PyStructSequence_Field exit_fields[] = {
    {"ended", "the command ended (its status came) or the server closed the channel"},
    {"exit_status", "the command's exit status, or None"},
    {"signal", "the name of the signal that ended it (\"TERM\"), or None"},
    {"core_dumped", "the signal dumped core"},
    {"error_message", "the server's message with the signal"},
    {NULL, NULL},
};
static PyStructSequence_Field attrs_fields[] = {
    {"size", NULL},
    {"uid", NULL},
    {"gid", NULL},
    {"mode", NULL},
    {"atime", NULL},
    {"mtime", NULL},
    {"extended", "((name, data), ...)"},
    {NULL, NULL},
};
static PyStructSequence_Field transfer_fields[] = {
    {"moved", "bytes moved"},
    {"status", "the first failed SFTP status code, or -1"},
    {"message", "its message (bytes from the server)"},
    {"local_errno", "errno of a failed local read or write, -1 for a file that ended early, or 0"},
    {NULL, NULL},
};
static PyStructSequence_Field read_fields[] = {
    {"data", "the bytes read"},
    {"status", "the first failed SFTP status code, or -1"},
    {"message", "its message (bytes from the server)"},
    {NULL, NULL},
};
static PyStructSequence_Field counts_fields[] = {
    {"served", "connections served"},  {"up", "bytes to the target"},
    {"down", "bytes from the target"}, {"failed", "connections that could not be made"},
    {"open", "connections open now"},  {NULL, NULL},
};

static PyStructSequence_Field target_fields[] = {
    {"host", "the host to connect to, after ~/.ssh/config"},
    {"user", "the user"},
    {"port", "the port"},
    {NULL, NULL},
};
static PyStructSequence_Field server_key_fields[] = {
    {"type", "the key's type (\"ssh-ed25519\")"},
    {"sha256", "its SHA256 fingerprint (\"SHA256:...\")"},
    {"sha1", "its SHA1 hash, hex"},
    {"base64", "the key, base64 (as in known_hosts)"},
    {NULL, NULL},
};
static PyStructSequence_Field name_fields[] = {
    {"name", "the entry's name (checked: one safe component)"},
    {"longname", "the server's ls -l line"},
    {"attrs", "its SFTPAttrs"},
    {NULL, NULL},
};

static PyStructSequence_Desc named_results[] = {
    {"pyssh._ssh.RunResult", "How a command ended (Channel.run).", run_fields, 7},
    {"pyssh._ssh.SFTPAttrs", "A file's attributes as the server sent them; None where absent.",
     attrs_fields, 7},
    {"pyssh._ssh.SFTPTransfer", "How an SFTP download, upload or write ended.", transfer_fields, 4},
    {"pyssh._ssh.SFTPRead", "What an SFTP read brought.", read_fields, 3},
    {"pyssh._ssh.TunnelCounts", "A tunnel's counters.", counts_fields, 5},
    {"pyssh._ssh.Target", "Where a session connects (Session._configure).", target_fields, 3},
    {"pyssh._ssh.ServerKey", "The server's host key (Session._server_key).", server_key_fields, 4},
    {"pyssh._ssh.SFTPName", "An entry of a NAME reply.", name_fields, 3},
    {"pyssh._ssh.ChannelRecv", "What Channel.recv brought.", recv_fields, 6},
    {"pyssh._ssh.ExitInfo", "How a command ended so far (Channel.status).", exit_fields, 5},
};

static PyTypeObject **
named_slot(pyssh_state *st, int i)
{
    PyTypeObject **slots[] = {&st->RunResultType, &st->SFTPAttrsType,    &st->SFTPTransferType,
                              &st->SFTPReadType,  &st->TunnelCountsType, &st->TargetType,
                              &st->ServerKeyType, &st->SFTPNameType,     &st->ChannelRecvType,
                              &st->ExitInfoType};
    return slots[i];
}

#define NAMED_COUNT ((int)(sizeof(named_results) / sizeof(named_results[0])))

static int
named_results_init(PyObject *module, pyssh_state *st)
{
    for (int i = 0; i < NAMED_COUNT; i++) {
        PyTypeObject *t = PyStructSequence_NewType(&named_results[i]);
        *named_slot(st, i) = t;
        if (t == NULL || PyModule_AddType(module, t) < 0) {
            return -1;
        }
    }
    return 0;
}

int
pyssh_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddType(module, *slot);
}

PyObject *
pyssh_named_result(PyTypeObject *type, PyObject **v, int n)
{
    PyObject *r = NULL;
    int complete = 1;
    for (int i = 0; i < n; i++) {
        complete &= v[i] != NULL;
    }
    if (complete) {
        r = PyStructSequence_New(type);
    }
    for (int i = 0; i < n; i++) {
        if (r != NULL) {
            PyStructSequence_SetItem(r, i, v[i]);
        }
        else {
            Py_XDECREF(v[i]);
        }
    }
    return r;
}

/* The "pyssh" logger, fetched once here rather than on first use: a lazy fetch
 * runs Python code (logging.getLogger) between finding the slot empty and filling
 * it, so two threads could both fill it (one reference leaked; without the GIL, a
 * data race on the slot). Module state is then written only before the module
 * can be seen by any thread. */
static int
logger_init(pyssh_state *st)
{
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging == NULL) {
        return -1;
    }
    st->logger = PyObject_CallMethod(logging, "getLogger", "s", "pyssh");
    Py_DECREF(logging);
    return st->logger == NULL ? -1 : 0;
}

/* The functions, exceptions, named results and types of the module. */
static int
module_add_parts(PyObject *module, pyssh_state *st)
{
    if (PyModule_AddFunctions(module, pyssh_agentcert_methods) < 0 ||
        PyModule_AddFunctions(module, pyssh_names_methods) < 0 ||
        PyModule_AddFunctions(module, pyssh_op_methods_module) < 0) {
        return -1;
    }
    if (pyssh_errors_init(module, st) < 0 || named_results_init(module, st) < 0 ||
        logger_init(st) < 0 || pyssh_session_setup_type(module, st) < 0) {
        return -1;
    }
    if (pyssh_add_type(module, &pyssh_tunnel_spec, &st->TunnelType) < 0 ||
        pyssh_add_type(module, &pyssh_sftp_spec, &st->SFTPType) < 0 ||
        pyssh_add_type(module, &pyssh_channel_spec, &st->ChannelType) < 0 ||
        pyssh_add_type(module, &pyssh_key_spec, &st->KeyType) < 0 ||
        pyssh_add_type(module, &pyssh_op_spec, &st->OpType) < 0 ||
        pyssh_add_type(module, &pyssh_driver_spec, &st->DriverType) < 0) {
        return -1;
    }
    return pyssh_scp_setup(module) < 0 || pyssh_capi_setup(module) < 0 ? -1 : 0;
}

static int
module_exec(PyObject *module)
{
    pyssh_state *st = PyModule_GetState(module);

    if (pyssh_platform_init() < 0 || pyssh_wait_init() < 0) { /* Winsock; the main thread */
        return -1;
    }
    /* ssh_init() is reference counted, so each module object (one per
     * interpreter) may call it. It is never undone: ssh_finalize() while another
     * thread or interpreter still uses libssh would pull the rug from under it. */
    if (ssh_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "pyssh: libssh failed to initialise (ssh_init)");
        return -1;
    }
    if (module_add_parts(module, st) < 0) {
        return -1;
    }

#define C(name)                                                                                    \
    if (PyModule_AddIntConstant(module, #name, name) < 0)                                          \
    return -1
    C(SSH_AUTH_SUCCESS);
    C(SSH_AUTH_DENIED);
    C(SSH_AUTH_PARTIAL);
    C(SSH_AUTH_INFO);
    C(SSH_AUTH_METHOD_NONE);
    C(SSH_AUTH_METHOD_PASSWORD);
    C(SSH_AUTH_METHOD_PUBLICKEY);
    C(SSH_AUTH_METHOD_HOSTBASED);
    C(SSH_AUTH_METHOD_INTERACTIVE);
    C(SSH_AUTH_METHOD_GSSAPI_MIC);
    C(SSH_KNOWN_HOSTS_OK);
    C(SSH_KNOWN_HOSTS_CHANGED);
    C(SSH_KNOWN_HOSTS_OTHER);
    C(SSH_KNOWN_HOSTS_UNKNOWN);
    C(SSH_KNOWN_HOSTS_NOT_FOUND);
#undef C
    if (PyModule_AddIntConstant(module, "SFTP_STRIPE_AHEAD", PYSSH_SFTP_STRIPE_AHEAD) < 0 ||
        PyModule_AddIntConstant(module, "MAX_HOPS", PYSSH_MAX_HOPS) < 0 ||
        /* the events of Op.step() and wait_socket() (WSAPoll's differ from poll.h's) */
        PyModule_AddIntConstant(module, "POLLIN", POLLIN) < 0 ||
        PyModule_AddIntConstant(module, "POLLOUT", POLLOUT) < 0) {
        return -1;
    }
    int aes = pyssh_cpu_has_aes();
    if (PyModule_AddIntConstant(module, "CPU_HAS_AES", aes) < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "DEFAULT_CIPHERS", aes ? AES_FIRST : "") < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "LIBSSH_VERSION", ssh_version(0)) < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "LIBSSH_HEADER_VERSION", SSH_STRINGIFY(LIBSSH_VERSION)) <
        0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    pyssh_state *st = PyModule_GetState(module);
    Py_VISIT(st->SessionType);
    Py_VISIT(st->ChannelType);
    Py_VISIT(st->TunnelType);
    Py_VISIT(st->SFTPType);
    Py_VISIT(st->KeyType);
    Py_VISIT(st->OpType);
    Py_VISIT(st->DriverType);
    Py_VISIT(st->logger);
    for (int i = 0; i < NAMED_COUNT; i++) {
        Py_VISIT(*named_slot(st, i));
    }
    return pyssh_errors_traverse(st, visit, arg);
}

static int
module_clear(PyObject *module)
{
    pyssh_state *st = PyModule_GetState(module);
    Py_CLEAR(st->SessionType);
    Py_CLEAR(st->ChannelType);
    Py_CLEAR(st->TunnelType);
    Py_CLEAR(st->SFTPType);
    Py_CLEAR(st->KeyType);
    Py_CLEAR(st->OpType);
    Py_CLEAR(st->DriverType);
    Py_CLEAR(st->logger);
    for (int i = 0; i < NAMED_COUNT; i++) {
        Py_CLEAR(*named_slot(st, i));
    }
    pyssh_errors_clear(st);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* Safe without the GIL (a free-threaded CPython, 3.13t on): an object's
     * claim is one atomic compare-and-swap; every field that a getter, a claim's
     * check or another thread's step shares is read and written under the
     * session lock or atomically; the module state is written once, by exec,
     * before the module is visible; process-wide statics are set once (wait.c,
     * capi.c). Without this slot, importing pyssh would turn the GIL back on.
     * Declared on every 3.13+ build, as CPython's own modules do: a build with
     * the GIL ignores it. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyModuleDef pyssh_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyssh._ssh",
    .m_doc = "The C half of pyssh: libssh sessions, with the GIL released while waiting.",
    .m_size = sizeof(pyssh_state),
    .m_methods = pyssh_scp_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

pyssh_state *
pyssh_state_from_type(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *module = PyType_GetModuleByDef(type, &pyssh_module_def);
    if (module == NULL) {
        return NULL;
    }
    return PyModule_GetState(module);
#else
    /* PyType_GetModuleByDef is 3.11+: walk the MRO for our heap type. */
    PyObject *mro = type->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *module = PyType_GetModule(t);
        if (module == NULL) {
            PyErr_Clear();
            continue;
        }
        if (PyModule_GetDef(module) == &pyssh_module_def) {
            return PyModule_GetState(module);
        }
    }
    PyErr_Format(PyExc_TypeError, "%s is not a pyssh type", type->tp_name);
    return NULL;
#endif
}

PyMODINIT_FUNC
PyInit__ssh(void)
{
    return PyModuleDef_Init(&pyssh_module_def);
}
