/* Internal to gateway/client: what the client's files share. */
#ifndef TG_CLIENT_INT_H
#define TG_CLIENT_INT_H

#include "tollgate/client.h"

/* The payer key held by the client (guarded memory, owned by the client). */
const tg_seckey *tg_client__key(const tg_client *c);

#endif
