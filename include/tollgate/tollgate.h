/* libtollgate: the whole public API in one include. */
#ifndef TOLLGATE_TOLLGATE_H
#define TOLLGATE_TOLLGATE_H

#include "tollgate/error.h"
#include "tollgate/types.h"

#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/eip191.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/keystore.h"
#include "tollgate/rlp.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/siwe.h"
#include "tollgate/tx.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

#endif
